//! Event metadata as message headers ([`crate::wire`] format 1), and back (formats 1 and 0).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use bytes::Bytes;
use uuid::Uuid;

use crate::event::Codec;
use crate::store::{NewEvent, StoreError, StoredEvent};
use crate::wire::{self, legacy, EventHeader};

/// The header names as [`HeaderName`]s built at compile time: inserting or looking them up
/// allocates nothing (a `&str` name is copied into a new buffer on every call).
pub(crate) mod name {
    use super::{legacy, wire, HeaderName};

    pub(crate) const EVENT: HeaderName = HeaderName::from_static(wire::EVENT_HEADER);
    pub(crate) const CORRELATION: HeaderName = HeaderName::from_static(wire::CORRELATION_HEADER);
    pub(crate) const CAUSATION: HeaderName = HeaderName::from_static(wire::CAUSATION_HEADER);
    pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static(wire::TRACEPARENT_HEADER);
    pub(crate) const MSG_ID: HeaderName = HeaderName::from_static(wire::MSG_ID_HEADER);
    pub(crate) const ORIGINAL_MSG_ID: HeaderName =
        HeaderName::from_static(wire::ORIGINAL_MSG_ID_HEADER);
    pub(crate) const EXPECTED_SUBJECT_SEQ: HeaderName =
        HeaderName::from_static(wire::EXPECTED_LAST_SUBJECT_SEQUENCE_HEADER);
    pub(crate) const EXPECTED_SUBJECT_SEQ_SUBJECT: HeaderName =
        HeaderName::from_static(wire::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT_HEADER);
    pub(crate) const BATCH_ID: HeaderName = HeaderName::from_static("Nats-Batch-Id");
    pub(crate) const BATCH_SEQ: HeaderName = HeaderName::from_static("Nats-Batch-Sequence");
    pub(crate) const BATCH_COMMIT: HeaderName = HeaderName::from_static("Nats-Batch-Commit");
    /// Set by the server on direct-get replies.
    pub(crate) const NATS_SEQUENCE: HeaderName = HeaderName::from_static("Nats-Sequence");
    pub(crate) const NATS_SUBJECT: HeaderName = HeaderName::from_static("Nats-Subject");
    pub(crate) const NATS_NUM_PENDING: HeaderName = HeaderName::from_static("Nats-Num-Pending");

    pub(crate) mod legacy_name {
        use super::{legacy, HeaderName};
        pub(crate) const EVENT_ID: HeaderName = HeaderName::from_static(legacy::EVENT_ID);
        pub(crate) const EVENT_NAME: HeaderName = HeaderName::from_static(legacy::EVENT_NAME);
        pub(crate) const EVENT_VERSION: HeaderName = HeaderName::from_static(legacy::EVENT_VERSION);
        pub(crate) const CODEC: HeaderName = HeaderName::from_static(legacy::CODEC);
        pub(crate) const SEQUENCE: HeaderName = HeaderName::from_static(legacy::SEQUENCE);
        pub(crate) const COMMAND: HeaderName = HeaderName::from_static(legacy::COMMAND);
        pub(crate) const TIMESTAMP: HeaderName = HeaderName::from_static(legacy::TIMESTAMP);
    }
}

/// An upper bound of the bytes one event's message takes against the server's max payload:
/// its payload, its metadata headers, and room for the NATS control headers of an append.
pub(crate) fn message_size(event: &NewEvent, command_id: Option<&str>) -> usize {
    // The event header, OCC and batch headers, and the message id without the command id stay
    // well below this; what varies is counted below.
    const FIXED: usize = 512;
    let command = command_id.map_or(0, str::len);
    let causation = event.causation_id.as_ref().map_or(0, String::len);
    let user: usize = (event.headers.iter())
        .map(|(name, value)| 2 * (wire::USER_HEADER_PREFIX.len() + name.len() + value.len() + 4))
        .sum();
    FIXED + event.payload.len() + event.correlation_id.len() + causation + command + user
}

/// The headers of one event message (without NATS control headers). The event passed the
/// store contract's checks.
pub(crate) fn encode(event: &NewEvent, sequence: u64) -> HeaderMap {
    let header = EventHeader {
        sequence,
        id: event.id,
        version: event.version,
        codec: event.codec,
        timestamp: event.timestamp,
    };
    let causation = event.causation_id.as_deref();
    encode_fields(&header, &event.correlation_id, causation, &event.headers)
}

/// The headers of an event another store committed (the PostgreSQL relay's), as [`encode`]
/// writes them for this store's own appends.
#[cfg(feature = "postgres")]
pub(crate) fn encode_stored(event: &StoredEvent) -> HeaderMap {
    let header = EventHeader {
        sequence: event.sequence,
        id: event.id,
        version: event.version,
        codec: event.codec,
        timestamp: event.timestamp,
    };
    let causation = event.causation_id.as_deref();
    encode_fields(&header, &event.correlation_id, causation, &event.headers)
}

fn encode_fields(
    header: &EventHeader,
    correlation: &str,
    causation: Option<&str>,
    user_headers: &BTreeMap<String, String>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name::EVENT, header.encode());
    if !is_own_id(correlation, header.id) {
        headers.insert(name::CORRELATION, correlation);
    }
    if let Some(causation) = causation {
        headers.insert(name::CAUSATION, causation);
    }
    for (user, value) in user_headers {
        let user_name = format!("{}{user}", wire::USER_HEADER_PREFIX);
        headers.insert(user_name.as_str(), value.as_str());
        if user.eq_ignore_ascii_case(wire::TRACEPARENT_HEADER) {
            headers.insert(name::TRACEPARENT, value.as_str());
        }
    }
    headers
}

/// Whether `correlation` is `id` written the way [`Uuid`]'s `Display` writes it.
fn is_own_id(correlation: &str, id: Uuid) -> bool {
    correlation.len() == uuid::fmt::Hyphenated::LENGTH
        && correlation == id.hyphenated().encode_lower(&mut Uuid::encode_buffer())
}

fn corrupt(position: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        position,
        reason,
        source: None,
    }
}

fn get(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).map(HeaderValue::as_str)
}

/// Rebuilds a stored event from a message's subject, stream sequence, headers and payload.
///
/// `subject_rest` is the subject after `<prefix>.`: `<type>.<id>.<name>`.
pub(crate) fn decode(
    subject_rest: &str,
    position: u64,
    headers: &HeaderMap,
    payload: Bytes,
) -> Result<StoredEvent, StoreError> {
    let corrupt = |reason: String| corrupt(position, reason);
    let Some(parts) = wire::parse_subject_tail(subject_rest) else {
        return Err(corrupt(format!(
            "subject tail {subject_rest:?} is not <type>.<id>.<event>"
        )));
    };
    let Some(value) = get(headers, name::EVENT) else {
        return decode_legacy(parts, position, headers, payload);
    };
    let header = EventHeader::parse(value)
        .map_err(|e| unreadable(position, format!("header {}", wire::EVENT_HEADER), e))?;
    let command_of =
        |msg_id| wire::command_of_message_id(parts.aggregate_type, parts.aggregate_id, msg_id);
    let command_id = (get(headers, name::MSG_ID).and_then(command_of))
        .or_else(|| get(headers, name::ORIGINAL_MSG_ID).and_then(command_of))
        .map(str::to_owned);
    let correlation_id = match get(headers, name::CORRELATION) {
        Some(correlation) => correlation.to_owned(),
        None => header.id.hyphenated().to_string(),
    };
    Ok(StoredEvent {
        id: header.id,
        aggregate_type: parts.aggregate_type.to_owned(),
        aggregate_id: parts.aggregate_id.to_owned(),
        sequence: header.sequence,
        position,
        name: parts.event_name.to_owned(),
        version: header.version,
        codec: header.codec,
        payload,
        timestamp: header.timestamp,
        correlation_id,
        causation_id: get(headers, name::CAUSATION).map(str::to_owned),
        command_id,
        headers: user_headers(headers),
    })
}

/// The stored event at `position` is corrupt: `what` cannot be read, for the reason `error`.
fn unreadable(
    position: u64,
    what: String,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Corrupt {
        position,
        reason: format!("{what} cannot be read"),
        source: Some(error.into()),
    }
}

fn user_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut user = BTreeMap::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if let Some(user_name) = name.strip_prefix(wire::USER_HEADER_PREFIX) {
            if let Some(value) = values.first() {
                user.insert(user_name.to_owned(), value.as_str().to_owned());
            }
        }
    }
    user
}

/// Format 0: every field in its own header.
fn decode_legacy(
    parts: wire::SubjectParts<'_>,
    position: u64,
    headers: &HeaderMap,
    payload: Bytes,
) -> Result<StoredEvent, StoreError> {
    use name::legacy_name;
    let corrupt = |reason: String| corrupt(position, reason);
    let unreadable = |name: &str, error: Box<dyn std::error::Error + Send + Sync>| {
        unreadable(position, format!("header {name}"), error)
    };
    let required = |name: HeaderName| {
        get(headers, name.clone()).ok_or_else(|| corrupt(format!("header {name} is missing")))
    };
    if get(headers, legacy_name::EVENT_ID).is_none() {
        return Err(corrupt(format!(
            "neither header {} nor {} is present: not a jetsource event",
            wire::EVENT_HEADER,
            legacy::EVENT_ID
        )));
    }
    let id = Uuid::parse_str(required(legacy_name::EVENT_ID)?)
        .map_err(|e| unreadable(legacy::EVENT_ID, e.into()))?;
    let version = required(legacy_name::EVENT_VERSION)?
        .parse::<u32>()
        .map_err(|e| unreadable(legacy::EVENT_VERSION, e.into()))?;
    let codec_name = required(legacy_name::CODEC)?;
    let codec =
        Codec::parse(codec_name).ok_or_else(|| corrupt(format!("unknown codec {codec_name:?}")))?;
    let sequence = required(legacy_name::SEQUENCE)?
        .parse::<u64>()
        .map_err(|e| unreadable(legacy::SEQUENCE, e.into()))?;
    let nanos = required(legacy_name::TIMESTAMP)?
        .parse::<u64>()
        .map_err(|e| unreadable(legacy::TIMESTAMP, e.into()))?;
    Ok(StoredEvent {
        id,
        aggregate_type: parts.aggregate_type.to_owned(),
        aggregate_id: parts.aggregate_id.to_owned(),
        sequence,
        position,
        name: required(legacy_name::EVENT_NAME)?.to_owned(),
        version,
        codec,
        payload,
        timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
        correlation_id: required(name::CORRELATION)?.to_owned(),
        causation_id: get(headers, name::CAUSATION).map(str::to_owned),
        command_id: get(headers, legacy_name::COMMAND).map(str::to_owned),
        headers: user_headers(headers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn event(correlation: Option<&str>) -> NewEvent {
        let id = Uuid::now_v7();
        NewEvent {
            id,
            name: "deposited",
            version: 2,
            codec: Codec::Json,
            payload: Bytes::from_static(b"{}"),
            timestamp: SystemTime::now(),
            correlation_id: correlation.map_or_else(|| id.to_string(), str::to_owned),
            causation_id: Some("cause".into()),
            headers: BTreeMap::from([("tenant".into(), "acme".into())]),
        }
    }

    #[test]
    fn format_1_round_trips_and_reads_the_command_id_from_the_message_id() {
        for correlation in [None, Some("req-9")] {
            let new = event(correlation);
            let mut headers = encode(&new, 4);
            assert_eq!(
                headers.get(name::CORRELATION).is_some(),
                correlation.is_some()
            );
            headers.insert(
                name::MSG_ID,
                wire::message_id("account", "a1", "cmd:1", 0).as_str(),
            );
            let stored = decode("account.a1.deposited", 9, &headers, new.payload.clone()).unwrap();
            assert_eq!(stored.id, new.id);
            assert_eq!(
                (stored.sequence, stored.position, stored.version),
                (4, 9, 2)
            );
            assert_eq!(stored.correlation_id, new.correlation_id);
            assert_eq!(stored.causation_id.as_deref(), Some("cause"));
            assert_eq!(stored.command_id.as_deref(), Some("cmd:1"));
            assert_eq!(stored.timestamp, new.timestamp);
            assert_eq!(stored.headers, new.headers);
        }
    }

    #[test]
    fn format_0_is_still_read() {
        let mut headers = HeaderMap::new();
        let id = Uuid::now_v7();
        headers.insert(legacy::EVENT_ID, id.to_string().as_str());
        headers.insert(legacy::EVENT_NAME, "deposited");
        headers.insert(legacy::EVENT_VERSION, "1");
        headers.insert(legacy::CODEC, "protobuf");
        headers.insert(legacy::SEQUENCE, "3");
        headers.insert(legacy::CORRELATION, "req-1");
        headers.insert(legacy::COMMAND, "cmd-1");
        headers.insert(legacy::TIMESTAMP, "1764000000000000000");
        let stored = decode("account.a1.deposited", 5, &headers, Bytes::new()).unwrap();
        assert_eq!(
            (stored.id, stored.sequence, stored.codec),
            (id, 3, Codec::Protobuf)
        );
        assert_eq!(stored.command_id.as_deref(), Some("cmd-1"));
        assert_eq!(stored.correlation_id, "req-1");
    }

    #[test]
    fn a_message_of_neither_format_is_corrupt_and_says_why() {
        let err = decode("account.a1.deposited", 5, &HeaderMap::new(), Bytes::new()).unwrap_err();
        assert!(err.to_string().contains("not a jetsource event"), "{err}");
    }
}
