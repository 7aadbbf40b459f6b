//! The wire format: how an event is stored as a JetStream message, so that tools and programs
//! in other languages can read and write events jetsource reads.
//!
//! # Format 1 (written since 0.2)
//! One event is one message:
//!
//! | part | content |
//! |---|---|
//! | subject | `<prefix>.<aggregate type>.<aggregate id>.<event name>` ([`subject`]) |
//! | payload | the encoded event (JSON or Protobuf), nothing around it |
//! | header `Jetsource` | `1 <sequence> <event id> <schema version> <codec> <timestamp>` ([`EventHeader`]) |
//! | header `Jetsource-Correlation-Id` | only when the correlation id is not the event id |
//! | header `Jetsource-Causation-Id` | only when the event has a causation id |
//! | headers `Jetsource-H-<name>` | user headers, one each |
//! | header `Nats-Msg-Id` | only with a command id: `<type>.<id>:<command id>:<index>` ([`message_id`]) |
//!
//! `<sequence>` is the event's number within its aggregate (1, 2, 3 ... without gaps),
//! `<event id>` a UUID in 32 lowercase hex digits, `<codec>` `json` or `protobuf`, `<timestamp>`
//! Unix nanoseconds of the command that produced the event. A writer appending to an aggregate
//! guards the first message of its commit with `Nats-Expected-Last-Subject-Sequence: <stream
//! sequence of the aggregate's last event>` and `Nats-Expected-Last-Subject-Sequence-Subject:
//! <prefix>.<type>.<id>.*`; the server stores these two headers with the message, and readers
//! ignore them. The event's position is its stream sequence.
//!
//! Why this shape (measured, see the README): the event name stays in the subject, so consumers
//! filter by name on the server; the payload stays the bare event, so any NATS client can read
//! it; the metadata every event needs is one short header instead of seven, since the server
//! scans an appended message's headers several times and the client parses every stored header
//! on every load; optional ids travel only when they carry information, and the command id
//! rides in `Nats-Msg-Id`, which an idempotent append sends anyway.
//!
//! # Format 0 (written before 0.2), still read
//! The same subject and payload with the metadata in separate headers ([`legacy`]). Readers
//! decode both; a message with neither is not a jetsource event. [`EventMetadata::decode`]
//! reads either from a message's headers, for tools that read messages themselves.
//!
//! ```
//! use jetsource::wire::{self, EventHeader};
//! use jetsource::Codec;
//! let header = EventHeader {
//!     sequence: 7,
//!     id: uuid::Uuid::from_u128(0x0190a1b2_7c3d_7e4f_8a9b_0c1d2e3f4a5b),
//!     version: 2,
//!     codec: Codec::Json,
//!     timestamp: std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_764_000_000_000_000_001),
//! };
//! let value = header.to_string();
//! assert_eq!(value, "1 7 0190a1b27c3d7e4f8a9b0c1d2e3f4a5b 2 json 1764000000000000001");
//! assert_eq!(EventHeader::parse(&value).unwrap(), header);
//! assert_eq!(wire::subject("bank", "account", "acc-1", "deposited"), "bank.account.acc-1.deposited");
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::event::Codec;

/// The format this version of jetsource writes.
pub const FORMAT: u32 = 1;

/// The header holding an event's [`EventHeader`].
pub const EVENT_HEADER: &str = "Jetsource";
/// The correlation id, when it differs from the event id (absent: the event id).
pub const CORRELATION_HEADER: &str = "Jetsource-Correlation-Id";
/// The causation id, when there is one.
pub const CAUSATION_HEADER: &str = "Jetsource-Causation-Id";
/// User headers are stored under this prefix so they never collide with NATS or jetsource ones.
pub const USER_HEADER_PREFIX: &str = "Jetsource-H-";
/// W3C trace context: a user header of this name is also written under its own name, so
/// NATS-aware tracing sees it.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The NATS dedupe header; carries the command id of an idempotent append.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// A copy of an event's `Nats-Msg-Id` where NATS control headers cannot go (a dead letter is
/// republished without them), so its command id survives; read when `Nats-Msg-Id` is absent.
pub const ORIGINAL_MSG_ID_HEADER: &str = "Jetsource-Original-Msg-Id";
/// The optimistic-concurrency guard: stream sequence of the aggregate's last event.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER: &str = "Nats-Expected-Last-Subject-Sequence";
/// Which subjects the guard covers: `<prefix>.<type>.<id>.*`.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// The metadata every event carries, in the [`EVENT_HEADER`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// The event's number within its aggregate.
    pub sequence: u64,
    /// The event id.
    pub id: Uuid,
    /// The event's schema version.
    pub version: u32,
    /// The payload codec.
    pub codec: Codec,
    /// When the command produced the event.
    pub timestamp: SystemTime,
}

/// Why a header value is not a valid [`EventHeader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The value does not start with a format number this version reads.
    #[error("unknown wire format {0:?}")]
    UnknownFormat(String),
    /// A field is missing or malformed (in format 0, `field` is the header's name).
    #[error("field {field} is {problem}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// `missing`, or what is wrong with it.
        problem: String,
    },
    /// The message has neither format's header ([`EVENT_HEADER`], [`legacy::EVENT_ID`]).
    #[error(
        "neither header {EVENT_HEADER} nor {} is present: not a jetsource event",
        legacy::EVENT_ID
    )]
    NotAnEvent,
}

impl fmt::Display for EventHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Appends the decimal digits of `n` (the formatting machinery costs more than the append).
fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

impl EventHeader {
    /// The header value: `1 <sequence> <event id> <version> <codec> <timestamp>`.
    pub fn encode(&self) -> String {
        let nanos = self
            .timestamp
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut out = String::with_capacity(96);
        push_number(&mut out, u64::from(FORMAT));
        out.push(' ');
        push_number(&mut out, self.sequence);
        out.push(' ');
        out.push_str(self.id.simple().encode_lower(&mut Uuid::encode_buffer()));
        out.push(' ');
        push_number(&mut out, u64::from(self.version));
        out.push(' ');
        out.push_str(self.codec.as_str());
        out.push(' ');
        push_number(&mut out, nanos);
        out
    }

    /// Parses a value written by [`EventHeader`]'s `Display`. Fields after the known ones are
    /// ignored, so a later format that appends fields stays readable.
    pub fn parse(value: &str) -> Result<Self, WireError> {
        let mut fields = value.split(' ');
        let format = fields.next().unwrap_or_default();
        if format != "1" {
            return Err(WireError::UnknownFormat(format.to_owned()));
        }
        let mut next = |field: &'static str| {
            fields.next().ok_or(WireError::BadField {
                field,
                problem: "missing".into(),
            })
        };
        let bad = |field: &'static str, problem: String| WireError::BadField { field, problem };
        let sequence = next("sequence")?;
        let sequence = sequence
            .parse::<u64>()
            .map_err(|e| bad("sequence", format!("{sequence:?}: {e}")))?;
        let id = next("event id")?;
        let id = Uuid::try_parse(id).map_err(|e| bad("event id", format!("{id:?}: {e}")))?;
        let version = next("version")?;
        let version = version
            .parse::<u32>()
            .map_err(|e| bad("version", format!("{version:?}: {e}")))?;
        let codec = next("codec")?;
        let codec = Codec::parse(codec).ok_or_else(|| bad("codec", format!("{codec:?}")))?;
        let nanos = next("timestamp")?;
        let nanos = nanos
            .parse::<u64>()
            .map_err(|e| bad("timestamp", format!("{nanos:?}: {e}")))?;
        Ok(EventHeader {
            sequence,
            id,
            version,
            codec,
            timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
        })
    }
}

/// `<prefix>.<type>.<id>.<event name>`: where an event is published.
pub fn subject(prefix: &str, aggregate_type: &str, id: &str, event_name: &str) -> String {
    let mut subject = aggregate_subject(prefix, aggregate_type, id);
    subject.push('.');
    subject.push_str(event_name);
    subject
}

/// `<prefix>.<type>.<id>`: the stem of an aggregate's subjects.
pub fn aggregate_subject(prefix: &str, aggregate_type: &str, id: &str) -> String {
    let mut stem = String::with_capacity(prefix.len() + aggregate_type.len() + id.len() + 24);
    stem.push_str(prefix);
    stem.push('.');
    stem.push_str(aggregate_type);
    stem.push('.');
    stem.push_str(id);
    stem
}

/// `<prefix>.<type>.<id>.*`: every event of one aggregate.
pub fn aggregate_filter(prefix: &str, aggregate_type: &str, id: &str) -> String {
    let mut filter = aggregate_subject(prefix, aggregate_type, id);
    filter.push_str(".*");
    filter
}

/// The parts of an event subject after its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectParts<'a> {
    /// The aggregate type.
    pub aggregate_type: &'a str,
    /// The aggregate id.
    pub aggregate_id: &'a str,
    /// The event name.
    pub event_name: &'a str,
}

/// Splits `<type>.<id>.<event name>` (an event subject without `<prefix>.`).
///
/// ```
/// let parts = jetsource::wire::parse_subject_tail("account.acc-1.deposited").unwrap();
/// assert_eq!((parts.aggregate_type, parts.aggregate_id, parts.event_name), ("account", "acc-1", "deposited"));
/// assert!(jetsource::wire::parse_subject_tail("account.acc-1").is_none());
/// ```
pub fn parse_subject_tail(tail: &str) -> Option<SubjectParts<'_>> {
    let mut tokens = tail.splitn(3, '.');
    let (aggregate_type, aggregate_id, event_name) =
        (tokens.next()?, tokens.next()?, tokens.next()?);
    if aggregate_type.is_empty() || aggregate_id.is_empty() || event_name.is_empty() {
        return None;
    }
    Some(SubjectParts {
        aggregate_type,
        aggregate_id,
        event_name,
    })
}

/// The `Nats-Msg-Id` of message `index` of an idempotent commit: `<type>.<id>:<command>:<index>`.
/// The dedupe window is stream-wide, so the aggregate is part of it.
pub fn message_id(aggregate_type: &str, id: &str, command_id: &str, index: usize) -> String {
    format!("{aggregate_type}.{id}:{command_id}:{index}")
}

/// The command id inside a `Nats-Msg-Id` written by [`message_id`] for aggregate `<type>.<id>`.
///
/// ```
/// use jetsource::wire::{command_of_message_id, message_id};
/// let msg_id = message_id("account", "a1", "cmd:7", 2);
/// assert_eq!(command_of_message_id("account", "a1", &msg_id), Some("cmd:7"));
/// assert_eq!(command_of_message_id("account", "a2", &msg_id), None);
/// ```
pub fn command_of_message_id<'a>(
    aggregate_type: &str,
    id: &str,
    msg_id: &'a str,
) -> Option<&'a str> {
    let rest = msg_id
        .strip_prefix(aggregate_type)?
        .strip_prefix('.')?
        .strip_prefix(id)?
        .strip_prefix(':')?;
    let (command, index) = rest.rsplit_once(':')?;
    index.parse::<usize>().ok()?;
    Some(command)
}

/// Splits a whole event subject `<prefix>.<type>.<id>.<event name>` into its prefix and parts.
/// The type, id and event name are one token each, so they are the last three tokens whatever
/// dots the prefix holds; events a `Publisher` publishes on a topic split the same way
/// (the topic in place of the type).
///
/// ```
/// let (prefix, parts) = jetsource::wire::split_subject("orders.eu.order.o-1.placed").unwrap();
/// assert_eq!(prefix, "orders.eu");
/// assert_eq!((parts.aggregate_type, parts.aggregate_id, parts.event_name), ("order", "o-1", "placed"));
/// assert!(jetsource::wire::split_subject("order.o-1.placed").is_none());
/// ```
pub fn split_subject(subject: &str) -> Option<(&str, SubjectParts<'_>)> {
    let mut tokens = subject.rsplitn(4, '.');
    let (event_name, aggregate_id, aggregate_type, prefix) = (
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
    );
    if [prefix, aggregate_type, aggregate_id, event_name]
        .iter()
        .any(|token| token.is_empty())
    {
        return None;
    }
    Some((
        prefix,
        SubjectParts {
            aggregate_type,
            aggregate_id,
            event_name,
        },
    ))
}

/// The metadata of one event message, read from its subject and headers in either format: what
/// the runtime's store reads, for tools that read messages themselves (the `jetsource` CLI's
/// `tail` and `dead-letters`).
///
/// ```
/// use jetsource::wire::{self, EventMetadata, EventHeader};
/// use jetsource::Codec;
/// let header = EventHeader {
///     sequence: 3,
///     id: uuid::Uuid::from_u128(0x0190a1b2_7c3d_7e4f_8a9b_0c1d2e3f4a5b),
///     version: 1,
///     codec: Codec::Json,
///     timestamp: std::time::UNIX_EPOCH,
/// };
/// let (_, parts) = wire::split_subject("bank.account.acc-1.deposited").unwrap();
/// let msg_id = wire::message_id("account", "acc-1", "cmd-7", 0);
/// let headers = [
///     (wire::EVENT_HEADER, header.to_string()),
///     (wire::MSG_ID_HEADER, msg_id),
///     ("Jetsource-H-tenant", "acme".to_owned()),
/// ];
/// let metadata = EventMetadata::decode(parts, headers.iter().map(|(n, v)| (*n, v.as_str()))).unwrap();
/// assert_eq!((metadata.format, metadata.name.as_str(), metadata.sequence), (1, "deposited", 3));
/// assert_eq!(metadata.correlation_id, "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b");
/// assert_eq!(metadata.command_id.as_deref(), Some("cmd-7"));
/// assert_eq!(metadata.headers["tenant"], "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventMetadata {
    /// The format the message was written in: [`FORMAT`] (1), or 0 for [`legacy`] headers.
    pub format: u32,
    /// The event name: the subject's last token (format 1), the `Jetsource-Event-Name` header
    /// (format 0).
    pub name: String,
    /// The event's number within its aggregate.
    pub sequence: u64,
    /// The event id.
    pub id: Uuid,
    /// The event's schema version.
    pub version: u32,
    /// The payload codec.
    pub codec: Codec,
    /// When the command produced the event.
    pub timestamp: SystemTime,
    /// The correlation id (in format 1 the event id, hyphenated, when the header is absent).
    pub correlation_id: String,
    /// The causation id.
    pub causation_id: Option<String>,
    /// The command id (format 1: from a `Nats-Msg-Id` written by [`message_id`] for this
    /// aggregate; NATS strips that header from messages it copies, such as dead letters).
    pub command_id: Option<String>,
    /// The user headers, without their [`USER_HEADER_PREFIX`].
    pub headers: std::collections::BTreeMap<String, String>,
}

impl EventMetadata {
    /// Decodes the metadata of the message on the subject `parts` (see [`split_subject`] and
    /// [`parse_subject_tail`]) from its headers, given as `(name, value)` pairs. Names match
    /// exactly, as NATS header names do; of a header given twice the first value counts.
    /// [`WireError::NotAnEvent`] when neither format's header is present; for format 0, a
    /// [`WireError::BadField`] names the header.
    pub fn decode<'a, I>(parts: SubjectParts<'_>, headers: I) -> Result<Self, WireError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let headers: Vec<(&str, &str)> = headers.into_iter().collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| *value)
        };
        let mut user = std::collections::BTreeMap::new();
        for (name, value) in &headers {
            if let Some(user_name) = name.strip_prefix(USER_HEADER_PREFIX) {
                user.entry(user_name.to_owned())
                    .or_insert_with(|| (*value).to_owned());
            }
        }
        let causation_id = get(CAUSATION_HEADER).map(str::to_owned);
        if let Some(value) = get(EVENT_HEADER) {
            let header = EventHeader::parse(value)?;
            let command_of =
                |msg_id| command_of_message_id(parts.aggregate_type, parts.aggregate_id, msg_id);
            let command_id = (get(MSG_ID_HEADER).and_then(command_of))
                .or_else(|| get(ORIGINAL_MSG_ID_HEADER).and_then(command_of))
                .map(str::to_owned);
            let correlation_id = get(CORRELATION_HEADER)
                .map_or_else(|| header.id.hyphenated().to_string(), str::to_owned);
            return Ok(EventMetadata {
                format: FORMAT,
                name: parts.event_name.to_owned(),
                sequence: header.sequence,
                id: header.id,
                version: header.version,
                codec: header.codec,
                timestamp: header.timestamp,
                correlation_id,
                causation_id,
                command_id,
                headers: user,
            });
        }
        if get(legacy::EVENT_ID).is_none() {
            return Err(WireError::NotAnEvent);
        }
        let required = |field: &'static str| {
            get(field).ok_or(WireError::BadField {
                field,
                problem: "missing".into(),
            })
        };
        fn number<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, WireError>
        where
            T::Err: fmt::Display,
        {
            value.parse::<T>().map_err(|e| WireError::BadField {
                field,
                problem: format!("{value:?}: {e}"),
            })
        }
        let id = required(legacy::EVENT_ID)?;
        let id = Uuid::try_parse(id).map_err(|e| WireError::BadField {
            field: legacy::EVENT_ID,
            problem: format!("{id:?}: {e}"),
        })?;
        let codec = required(legacy::CODEC)?;
        let codec = Codec::parse(codec).ok_or_else(|| WireError::BadField {
            field: legacy::CODEC,
            problem: format!("{codec:?}"),
        })?;
        let nanos: u64 = number(legacy::TIMESTAMP, required(legacy::TIMESTAMP)?)?;
        Ok(EventMetadata {
            format: 0,
            name: required(legacy::EVENT_NAME)?.to_owned(),
            sequence: number(legacy::SEQUENCE, required(legacy::SEQUENCE)?)?,
            id,
            version: number(legacy::EVENT_VERSION, required(legacy::EVENT_VERSION)?)?,
            codec,
            timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
            correlation_id: required(legacy::CORRELATION)?.to_owned(),
            causation_id,
            command_id: get(legacy::COMMAND).map(str::to_owned),
            headers: user,
        })
    }
}

/// Format 0: the header names written before format 1. Still read, never written.
pub mod legacy {
    /// The event id (hyphenated UUID).
    pub const EVENT_ID: &str = "Jetsource-Event-Id";
    /// The event name (also the subject's last token).
    pub const EVENT_NAME: &str = "Jetsource-Event-Name";
    /// The schema version.
    pub const EVENT_VERSION: &str = "Jetsource-Event-Version";
    /// `json` or `protobuf`.
    pub const CODEC: &str = "Jetsource-Codec";
    /// The event's number within its aggregate.
    pub const SEQUENCE: &str = "Jetsource-Sequence";
    /// The correlation id (always present).
    pub const CORRELATION: &str = "Jetsource-Correlation-Id";
    /// The causation id.
    pub const CAUSATION: &str = "Jetsource-Causation-Id";
    /// The command id.
    pub const COMMAND: &str = "Jetsource-Command-Id";
    /// Unix nanoseconds.
    pub const TIMESTAMP: &str = "Jetsource-Timestamp";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_checked() {
        assert!(matches!(
            EventHeader::parse("2 1 x"),
            Err(WireError::UnknownFormat(f)) if f == "2"
        ));
        let missing = EventHeader::parse("1 5").unwrap_err();
        assert_eq!(missing.to_string(), "field event id is missing");
        let bad = EventHeader::parse("1 5 0190a1b27c3d7e4f8a9b0c1d2e3f4a5b 1 xml 1").unwrap_err();
        assert_eq!(bad.to_string(), "field codec is \"xml\"");
    }

    fn parts(tail: &str) -> SubjectParts<'_> {
        parse_subject_tail(tail).unwrap()
    }

    #[test]
    fn metadata_of_format_1_takes_defaults_from_the_event_id_and_subject() {
        let id = "0190a1b27c3d7e4f8a9b0c1d2e3f4a5b";
        let value = format!("1 4 {id} 2 protobuf 1764000000000000001");
        let metadata = EventMetadata::decode(
            parts("account.a1.deposited"),
            [
                (EVENT_HEADER, value.as_str()),
                (CAUSATION_HEADER, "cause"),
                (MSG_ID_HEADER, "account.a2:cmd:0"),
                ("Jetsource-H-tenant", "acme"),
                ("Jetsource-H-tenant", "second"),
                (TRACEPARENT_HEADER, "00-ab-cd-01"),
            ],
        )
        .unwrap();
        assert_eq!(metadata.format, 1);
        assert_eq!(metadata.name, "deposited");
        assert_eq!((metadata.sequence, metadata.version), (4, 2));
        assert_eq!(metadata.codec, Codec::Protobuf);
        assert_eq!(metadata.id, Uuid::try_parse(id).unwrap());
        assert_eq!(
            metadata.correlation_id,
            metadata.id.hyphenated().to_string()
        );
        assert_eq!(metadata.causation_id.as_deref(), Some("cause"));
        // The message id of another aggregate is no command id of this one.
        assert_eq!(metadata.command_id, None);
        assert_eq!(
            metadata.headers,
            std::collections::BTreeMap::from([("tenant".to_owned(), "acme".to_owned())])
        );
        let bad = EventMetadata::decode(parts("a.b.c"), [(EVENT_HEADER, "1 x")]).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "field sequence is \"x\": invalid digit found in string"
        );
    }

    #[test]
    fn metadata_of_format_0_comes_from_the_legacy_headers() {
        let id = "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b";
        let mut headers = vec![
            (legacy::EVENT_ID, id),
            (legacy::EVENT_NAME, "deposited"),
            (legacy::EVENT_VERSION, "3"),
            (legacy::CODEC, "json"),
            (legacy::SEQUENCE, "2"),
            (legacy::CORRELATION, "req-1"),
            (legacy::COMMAND, "cmd-1"),
            (legacy::TIMESTAMP, "1764000000000000000"),
        ];
        let metadata =
            EventMetadata::decode(parts("account.a1.deposited"), headers.clone()).unwrap();
        assert_eq!(metadata.format, 0);
        assert_eq!((metadata.sequence, metadata.version), (2, 3));
        assert_eq!(metadata.correlation_id, "req-1");
        assert_eq!(metadata.command_id.as_deref(), Some("cmd-1"));
        assert_eq!(
            metadata.timestamp,
            UNIX_EPOCH + Duration::from_nanos(1_764_000_000_000_000_000)
        );
        headers.retain(|(name, _)| *name != legacy::SEQUENCE);
        let missing = EventMetadata::decode(parts("account.a1.deposited"), headers).unwrap_err();
        assert_eq!(missing.to_string(), "field Jetsource-Sequence is missing");
        let neither = EventMetadata::decode(parts("a.b.c"), [("Nats-Msg-Id", "x")]).unwrap_err();
        assert_eq!(
            neither.to_string(),
            "neither header Jetsource nor Jetsource-Event-Id is present: not a jetsource event"
        );
    }

    #[test]
    fn whole_subjects_split_at_their_last_three_tokens() {
        let (prefix, p) = split_subject("a.b.c.type.id.name").unwrap();
        assert_eq!(prefix, "a.b.c");
        assert_eq!(
            (p.aggregate_type, p.aggregate_id, p.event_name),
            ("type", "id", "name")
        );
        for subject in ["type.id.name", ".type.id.name", "p..id.name", "p.type.id."] {
            assert!(split_subject(subject).is_none(), "{subject}");
        }
    }

    #[test]
    fn numbers_at_their_limits_round_trip() {
        for (sequence, nanos) in [(0, 0), (u64::MAX, u64::MAX), (10, 1_000_000_007)] {
            let header = EventHeader {
                sequence,
                id: Uuid::nil(),
                version: u32::MAX,
                codec: Codec::Json,
                timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
            };
            assert_eq!(EventHeader::parse(&header.encode()).unwrap(), header);
        }
    }

    #[test]
    fn later_fields_are_ignored() {
        let header =
            EventHeader::parse("1 5 0190a1b27c3d7e4f8a9b0c1d2e3f4a5b 3 protobuf 9 future").unwrap();
        assert_eq!((header.sequence, header.version), (5, 3));
        assert_eq!(header.codec, Codec::Protobuf);
    }
}
