//! Typed errors for encoding and decoding events, and how any error is shown with its causes.
//!
//! Every error of this crate names what went wrong in its own message and leaves the cause to
//! [`source`](std::error::Error::source): a `Display` never repeats its source. Print the whole
//! chain with [`ErrorChain`].

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::codec::Codec;

/// Displays an error followed by each of its [`source`](Error::source)s: `a: b: c`.
///
/// A source whose text the error before it already shows (as some libraries' errors do) is
/// not printed twice.
///
/// ```
/// use jetsource::{ErrorChain, StoreError};
/// let error = StoreError::Backend(Box::new(std::io::Error::other("connection reset")));
/// assert_eq!(error.to_string(), "event store backend failed");
/// assert_eq!(
///     ErrorChain(&error).to_string(),
///     "event store backend failed: connection reset"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            let text = error.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A duration as people write it in messages: `2s`, `150ms`, `1m 30s`, `7d`, `0s`, which
/// `humantime::parse_duration` reads back.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(jetsource::HumanDuration(Duration::from_secs(90)).to_string(), "1m 30s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = u64::from(self.0.subsec_nanos());
        let parts = [
            (secs / 86_400, "d"),
            (secs / 3_600 % 24, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (nanos / 1_000_000, "ms"),
            (nanos / 1_000 % 1_000, "us"),
            (nanos % 1_000, "ns"),
        ];
        let mut first = true;
        for (value, unit) in parts {
            if value > 0 {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{value}{unit}")?;
                first = false;
            }
        }
        if first {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

/// An event payload could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// serde_json refused the value.
    #[error("event `{name}` could not be encoded as JSON")]
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
    /// The payload bytes are not a valid encoding of the type. The codec's error is the
    /// [`source`](std::error::Error::source).
    #[error("event `{name}` version {version} has a malformed {codec} payload")]
    Malformed {
        /// The stored wire name.
        name: String,
        /// The stored version.
        version: u32,
        /// The codec that failed.
        codec: Codec,
        /// What the codec said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    /// A snapshot could not be read. What serde_json said is the
    /// [`source`](std::error::Error::source).
    #[error("snapshot of `{aggregate_type}` is malformed")]
    Snapshot {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_people_write_them() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(150), "150ms"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_millis(1_500), "1s 500ms"),
            (Duration::from_secs(7 * 24 * 3600), "7d"),
            (Duration::from_secs(3 * 3600 + 5), "3h 5s"),
            (Duration::from_nanos(1_250), "1us 250ns"),
        ] {
            assert_eq!(HumanDuration(duration).to_string(), text);
        }
    }

    #[test]
    fn a_chain_shows_each_source_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Repeating);
        /// Shows its source itself, as async-nats' errors do.
        #[derive(Debug, thiserror::Error)]
        #[error("middle: {0}")]
        struct Repeating(#[source] std::io::Error);
        let error = Outer(Repeating(std::io::Error::other("root")));
        assert_eq!(ErrorChain(&error).to_string(), "outer: middle: root");
        assert_eq!(
            ErrorChain(&std::io::Error::other("alone")).to_string(),
            "alone"
        );
    }
}
