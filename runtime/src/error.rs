//! Typed errors for encoding and decoding events.

use crate::event::Codec;

/// An event payload could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// serde_json refused the value.
    #[error("event `{name}` could not be encoded as JSON: {source}")]
    Json {
        /// The event's wire name.
        name: &'static str,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

/// A stored event could not be turned into a current event type. Nothing is lost: the stored
/// bytes are untouched, and the error says which name and version failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No event type of the set knows this wire name, and it is not retired.
    #[error("unknown event `{name}` (version {version})")]
    UnknownEvent {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
    },
    /// The name is known but no type in its upcast chain has this (older) version.
    #[error("event `{name}` has no known version {version}")]
    UnknownVersion {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
    },
    /// The stored version is newer than the code: deploy newer code to read it.
    #[error("event `{name}` version {version} is newer than the latest version {latest} this code knows")]
    FutureVersion {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
        /// The newest version the code knows under this name.
        latest: u32,
    },
    /// The payload was written with another codec than the type at that version uses.
    #[error(
        "event `{name}` version {version} was stored as {found} but its type reads {expected}"
    )]
    CodecMismatch {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
        /// The codec the type reads.
        expected: Codec,
        /// The codec the payload was stored with.
        found: Codec,
    },
    /// The payload bytes are not a valid encoding of the type.
    #[error("event `{name}` version {version} has a malformed {codec} payload: {reason}")]
    Malformed {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
        /// The codec that failed.
        codec: Codec,
        /// What the codec said.
        reason: String,
    },
    /// A fallible upcast function (`#[event(upcast = ...)]` returning `Err`) refused the stored
    /// event: the step to version `upcast_to` could not be made from what was stored. The
    /// function's error is the [`source`](std::error::Error::source).
    #[error("event `{name}` version {version} could not be upcast to version {upcast_to}")]
    Upcast {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
        /// The version whose upcast function failed (the step from `upcast_to - 1`).
        upcast_to: u32,
        /// Why the upcast function refused the event.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Metadata needed to decode (name, version or codec) is missing or unreadable.
    #[error("event metadata is invalid: {0}")]
    Metadata(String),
    /// A snapshot could not be read.
    #[error("snapshot of `{aggregate_type}` is malformed: {reason}")]
    Snapshot {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// What serde_json said.
        reason: String,
    },
}
