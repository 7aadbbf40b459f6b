//! What generated code needs. Not public API: names here may change in any release.

pub use crate::aggregate::{Aggregate, Apply, SnapshotPolicy};
pub use crate::error::{DecodeError, EncodeError};
pub use crate::event::{Codec, EncodedEvent, Event, RawEvent};
pub use crate::event_set::EventSet;
pub use crate::process_manager::{ProcessContext, ProcessManager, Rejected, Rejection};
pub use crate::subscriber::{
    DeliverFrom, EventContext, HandlerError, Subscriber, SubscriberConfig, SubscriberDefinition,
};
pub use ::core;
/// Generated signatures name `Vec` through here: `::core` has none, and `::std` would tie the
/// generated code to the user's crate having `std` in scope under that name.
pub use ::std::vec::Vec;

/// A payload the JSON codec can serve.
#[diagnostic::on_unimplemented(
    message = "event `{Self}` uses the JSON codec but is not `serde::Serialize + serde::de::DeserializeOwned`",
    label = "cannot be encoded as JSON",
    note = "derive `serde::Serialize` and `serde::Deserialize`, or use `codec = \"protobuf\"` on a `prost::Message`"
)]
pub trait JsonPayload: Sized {
    /// Encodes as JSON.
    fn encode_json(&self, name: &'static str) -> Result<Vec<u8>, EncodeError>;
    /// Decodes JSON written by `encode_json`.
    fn decode_json(raw: RawEvent<'_>) -> Result<Self, DecodeError>;
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> JsonPayload for T {
    fn encode_json(&self, name: &'static str) -> Result<Vec<u8>, EncodeError> {
        serde_json::to_vec(self).map_err(|source| EncodeError::Json { name, source })
    }

    fn decode_json(raw: RawEvent<'_>) -> Result<Self, DecodeError> {
        expect_codec(raw, Codec::Json)?;
        serde_json::from_slice(raw.payload).map_err(|e| malformed(raw, e))
    }
}

/// A payload the Protobuf codec can serve.
#[diagnostic::on_unimplemented(
    message = "event `{Self}` uses the Protobuf codec but is not a `prost::Message + Default`",
    label = "cannot be encoded as Protobuf",
    note = "derive `prost::Message` (it also gives `Default`), or drop `codec = \"protobuf\"` to use JSON"
)]
pub trait ProtobufPayload: Sized {
    /// Encodes as Protobuf.
    fn encode_protobuf(&self) -> Vec<u8>;
    /// Decodes Protobuf written by `encode_protobuf`.
    fn decode_protobuf(raw: RawEvent<'_>) -> Result<Self, DecodeError>;
}

impl<T: prost::Message + Default> ProtobufPayload for T {
    fn encode_protobuf(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn decode_protobuf(raw: RawEvent<'_>) -> Result<Self, DecodeError> {
        expect_codec(raw, Codec::Protobuf)?;
        T::decode(raw.payload).map_err(|e| malformed(raw, e))
    }
}

/// The payload functions of one event type, as plain function pointers.
///
/// The event derive obtains them once per type, in one constant, from [`json_payload_fns`] or
/// [`protobuf_payload_fns`]: a type that cannot serve its codec then fails one trait bound in
/// one place (at `codec = ...`), instead of once per generated method.
pub struct PayloadFns<T> {
    /// Encodes the payload; the `&'static str` is the event's wire name, for errors.
    pub encode: fn(&T, &'static str) -> Result<Vec<u8>, EncodeError>,
    /// Decodes a payload stored with this type's codec.
    pub decode: fn(RawEvent<'_>) -> Result<T, DecodeError>,
}

/// The JSON payload functions of `T`.
pub const fn json_payload_fns<T: JsonPayload>() -> PayloadFns<T> {
    PayloadFns {
        encode: T::encode_json,
        decode: T::decode_json,
    }
}

/// The Protobuf payload functions of `T`.
pub const fn protobuf_payload_fns<T: ProtobufPayload>() -> PayloadFns<T> {
    fn encode<T: ProtobufPayload>(
        payload: &T,
        _name: &'static str,
    ) -> Result<Vec<u8>, EncodeError> {
        Ok(payload.encode_protobuf())
    }
    PayloadFns {
        encode: encode::<T>,
        decode: T::decode_protobuf,
    }
}

fn expect_codec(raw: RawEvent<'_>, expected: Codec) -> Result<(), DecodeError> {
    if raw.codec == expected {
        Ok(())
    } else {
        Err(DecodeError::CodecMismatch {
            name: raw.name.to_owned(),
            version: raw.version,
            expected,
            found: raw.codec,
        })
    }
}

fn malformed(
    raw: RawEvent<'_>,
    error: impl std::error::Error + Send + Sync + 'static,
) -> DecodeError {
    DecodeError::Malformed {
        name: raw.name.to_owned(),
        version: raw.version,
        codec: raw.codec,
        source: Box::new(error),
    }
}

/// The error for a stored version newer than `latest`.
pub fn future_version(raw: RawEvent<'_>, latest: u32) -> DecodeError {
    DecodeError::FutureVersion {
        name: raw.name.to_owned(),
        version: raw.version,
        latest,
    }
}

/// The error for a version no type of the chain has.
pub fn unknown_version(raw: RawEvent<'_>) -> DecodeError {
    DecodeError::UnknownVersion {
        name: raw.name.to_owned(),
        version: raw.version,
    }
}

/// The error for a name no variant of a set knows.
pub fn unknown_event(raw: RawEvent<'_>) -> DecodeError {
    DecodeError::UnknownEvent {
        name: raw.name.to_owned(),
        version: raw.version,
    }
}

/// Upcasting through `From`, with a message that says which event names which previous
/// version. The event derive calls it when `previous` is given without `upcast`.
#[diagnostic::on_unimplemented(
    message = "event `{Self}` names `{P}` as its previous version but cannot be upcast from it",
    label = "no `From<{P}>` for `{Self}`",
    note = "implement `From<{P}> for {Self}`, or name a function with `upcast = path::to::fn`"
)]
pub trait UpcastFrom<P>: Sized {
    /// Turns the previous version into this one.
    fn upcast_from(previous: P) -> Self;
}

impl<P, T: From<P>> UpcastFrom<P> for T {
    fn upcast_from(previous: P) -> Self {
        T::from(previous)
    }
}

/// What an `upcast = path::to::fn` function may return: the new version itself (an upcast that
/// cannot fail), or a `Result` of it whose error is any `std::error::Error + Send + Sync +
/// 'static` (or a `String` or `&str`, which become message-only errors). The event derive
/// passes the function's result through [`upcast_with`], so both shapes compile.
#[diagnostic::on_unimplemented(
    message = "an upcast function to `{T}` must return `{T}` or `Result<{T}, E>`, not `{Self}`",
    label = "this upcast function returns `{Self}`",
    note = "`E` must be a `std::error::Error + Send + Sync + 'static`, a `String` or a `&str`"
)]
pub trait UpcastOutput<T> {
    /// The upcast event, or why the stored one could not be upcast.
    fn into_upcast(self) -> Result<T, Box<dyn std::error::Error + Send + Sync + 'static>>;
}

impl<T> UpcastOutput<T> for T {
    fn into_upcast(self) -> Result<T, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self)
    }
}

impl<T, E: UpcastError> UpcastOutput<T> for Result<T, E> {
    fn into_upcast(self) -> Result<T, Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.map_err(UpcastError::into_source)
    }
}

/// The error of a fallible upcast function: anything that converts into a boxed error.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of an upcast function",
    label = "this upcast function's error type is `{Self}`",
    note = "the error must be a `std::error::Error + Send + Sync + 'static` (derive one with `thiserror`), a `String` or a `&str`"
)]
pub trait UpcastError {
    /// The error as the source of [`DecodeError::Upcast`].
    fn into_source(self) -> Box<dyn std::error::Error + Send + Sync + 'static>;
}

// Not recommended, so a type that is no error is reported with `UpcastError`'s message
// instead of the `From` impls of `Box<dyn Error>` this goes through.
#[diagnostic::do_not_recommend]
impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> UpcastError for E {
    fn into_source(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.into()
    }
}

/// The result of an `upcast = fn` step to version `upcast_to` of a stored event `raw`: a failed
/// upcast becomes [`DecodeError::Upcast`], with the function's error as its source.
pub fn upcast_with<T, O: UpcastOutput<T>>(
    raw: RawEvent<'_>,
    upcast_to: u32,
    output: O,
) -> Result<T, DecodeError> {
    output.into_upcast().map_err(|source| DecodeError::Upcast {
        name: raw.name.to_owned(),
        version: raw.version,
        upcast_to,
        source,
    })
}

/// Routes each variant of an event set to the state's `Apply` impl for it. The event set derive
/// implements it with one `S: Apply<Variant>` bound per variant, spanned at the variant, so a
/// missing impl is reported there.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jetsource event set",
    label = "not an event set",
    note = "add `#[derive(jetsource::EventSet)]` to an enum whose variants each wrap one event type"
)]
pub trait ApplyEach<S> {
    /// Applies the wrapped event to `state`.
    fn apply_to(self, state: &mut S);
}

/// Aggregate state that can be snapshotted (as JSON). One trait, so state that is not serde
/// both ways fails one bound with one message.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` takes snapshots but is not `serde::Serialize + serde::de::DeserializeOwned`",
    label = "snapshots need serde",
    note = "derive `serde::Serialize` and `serde::Deserialize` for `{Self}`, or remove `snapshot(...)`"
)]
pub trait SnapshotState: serde::Serialize + serde::de::DeserializeOwned {}

impl<T: serde::Serialize + serde::de::DeserializeOwned> SnapshotState for T {}

/// Serializes aggregate state for a snapshot.
pub fn encode_snapshot<T: SnapshotState>(state: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(state).map_err(|source| EncodeError::Json {
        name: "snapshot",
        source,
    })
}

/// Restores aggregate state from a snapshot.
pub fn decode_snapshot<T: SnapshotState>(
    aggregate_type: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError::Snapshot {
        aggregate_type,
        source,
    })
}

/// The snapshot functions of one aggregate, obtained once per type in one constant (like
/// [`PayloadFns`]) so state that cannot be snapshotted is reported once, at `snapshot(...)`.
pub struct SnapshotFns<T> {
    /// [`encode_snapshot`] for `T`.
    pub encode: fn(&T) -> Result<Vec<u8>, EncodeError>,
    /// [`decode_snapshot`] for `T`.
    pub decode: fn(&'static str, &[u8]) -> Result<T, DecodeError>,
}

/// The snapshot functions of `T`.
pub const fn snapshot_fns<T: SnapshotState>() -> SnapshotFns<T> {
    SnapshotFns {
        encode: encode_snapshot::<T>,
        decode: decode_snapshot::<T>,
    }
}

/// The names of `lists`, in order, each once: how the derives build `known_names`.
pub fn distinct_names<const N: usize>(lists: [Vec<&'static str>; N]) -> Vec<&'static str> {
    let mut names = Vec::new();
    for name in lists.into_iter().flatten() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// String equality usable in the const assertions the derives generate across types.
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The encode error of the placeholder impls a derive emits beside its `compile_error!`, so one
/// mistake does not cascade into "trait not implemented" errors. The crate never compiles, so
/// this never runs; it only gives those bodies a value of the right type.
pub fn derive_failed(name: &'static str) -> EncodeError {
    EncodeError::Json {
        name,
        source: <serde_json::Error as serde::ser::Error>::custom(
            "the derive of this type failed; see the compile error",
        ),
    }
}

/// The event set of the placeholder `Aggregate` impl emitted when `events = ...` is missing,
/// so the aggregate's other errors are still reported without one about its event set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEvents {}

impl EventSet for NoEvents {
    const NAMES: &'static [&'static str] = &[];

    fn encode(&self) -> Result<EncodedEvent, EncodeError> {
        match *self {}
    }

    fn decode(raw: RawEvent<'_>) -> Result<Option<Self>, DecodeError> {
        Err(unknown_event(raw))
    }

    fn event_name(&self) -> &'static str {
        match *self {}
    }
}

impl<S> ApplyEach<S> for NoEvents {
    fn apply_to(self, _: &mut S) {
        match self {}
    }
}

/// A rejection no `#[rejected]` handler takes: logged, and the instance goes on.
pub fn unhandled_rejection(manager: &'static str, rejection: &Rejection) {
    tracing::warn!(
        process_manager = manager,
        command = %rejection.command,
        aggregate_id = %rejection.aggregate_id,
        "a command was rejected and no #[rejected] handler takes it"
    );
}
