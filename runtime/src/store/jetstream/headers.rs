//! Event metadata as `Jetsource-*` message headers, and back.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use bytes::Bytes;
use uuid::Uuid;

use super::error::JetStreamError;
use crate::event::Codec;
use crate::store::{NewEvent, StoreError, StoredEvent};

pub(crate) const EVENT_ID: &str = "Jetsource-Event-Id";
pub(crate) const EVENT_NAME: &str = "Jetsource-Event-Name";
pub(crate) const EVENT_VERSION: &str = "Jetsource-Event-Version";
pub(crate) const CODEC: &str = "Jetsource-Codec";
pub(crate) const SEQUENCE: &str = "Jetsource-Sequence";
pub(crate) const CORRELATION: &str = "Jetsource-Correlation-Id";
pub(crate) const CAUSATION: &str = "Jetsource-Causation-Id";
pub(crate) const COMMAND: &str = "Jetsource-Command-Id";
pub(crate) const TIMESTAMP: &str = "Jetsource-Timestamp";
/// User headers are stored under this prefix so they never collide with NATS or jetsource ones.
pub(crate) const USER_PREFIX: &str = "Jetsource-H-";
/// W3C trace context, also carried under its own name so NATS-aware tracing sees it.
pub(crate) const TRACEPARENT: &str = "traceparent";

pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
pub(crate) const EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
pub(crate) const EXPECTED_SUBJECT_SEQ_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
pub(crate) const BATCH_ID: &str = "Nats-Batch-Id";
pub(crate) const BATCH_SEQ: &str = "Nats-Batch-Sequence";
pub(crate) const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// The same names as [`HeaderName`]s built at compile time: inserting or looking them up
/// allocates nothing (a `&str` name is copied into a new buffer on every call).
pub(crate) mod name {
    use super::HeaderName;

    pub(crate) const EVENT_ID: HeaderName = HeaderName::from_static(super::EVENT_ID);
    pub(crate) const EVENT_NAME: HeaderName = HeaderName::from_static(super::EVENT_NAME);
    pub(crate) const EVENT_VERSION: HeaderName = HeaderName::from_static(super::EVENT_VERSION);
    pub(crate) const CODEC: HeaderName = HeaderName::from_static(super::CODEC);
    pub(crate) const SEQUENCE: HeaderName = HeaderName::from_static(super::SEQUENCE);
    pub(crate) const CORRELATION: HeaderName = HeaderName::from_static(super::CORRELATION);
    pub(crate) const CAUSATION: HeaderName = HeaderName::from_static(super::CAUSATION);
    pub(crate) const COMMAND: HeaderName = HeaderName::from_static(super::COMMAND);
    pub(crate) const TIMESTAMP: HeaderName = HeaderName::from_static(super::TIMESTAMP);
    pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static(super::TRACEPARENT);
    pub(crate) const MSG_ID: HeaderName = HeaderName::from_static(super::MSG_ID);
    pub(crate) const EXPECTED_SUBJECT_SEQ: HeaderName =
        HeaderName::from_static(super::EXPECTED_SUBJECT_SEQ);
    pub(crate) const EXPECTED_SUBJECT_SEQ_SUBJECT: HeaderName =
        HeaderName::from_static(super::EXPECTED_SUBJECT_SEQ_SUBJECT);
    pub(crate) const BATCH_ID: HeaderName = HeaderName::from_static(super::BATCH_ID);
    pub(crate) const BATCH_SEQ: HeaderName = HeaderName::from_static(super::BATCH_SEQ);
    pub(crate) const BATCH_COMMIT: HeaderName = HeaderName::from_static(super::BATCH_COMMIT);
    /// Set by the server on direct-get replies.
    pub(crate) const NATS_SEQUENCE: HeaderName = HeaderName::from_static("Nats-Sequence");
    pub(crate) const NATS_SUBJECT: HeaderName = HeaderName::from_static("Nats-Subject");
    pub(crate) const NATS_NUM_PENDING: HeaderName = HeaderName::from_static("Nats-Num-Pending");
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// Checks a value that goes into a header: no CR, LF or other control characters.
pub(crate) fn check_value(what: &str, value: &str) -> Result<(), JetStreamError> {
    if has_control(value) {
        return Err(JetStreamError::InvalidInput {
            what: what.to_owned(),
            reason: format!("{value:?} contains a control character"),
        });
    }
    Ok(())
}

/// Checks a user header name: printable ASCII without `:` or spaces.
pub(crate) fn check_name(name: &str) -> Result<(), JetStreamError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(JetStreamError::InvalidInput {
            what: format!("user header {name:?}"),
            reason: "header names must be printable ASCII without `:` or spaces".into(),
        });
    }
    Ok(())
}

/// Validates an event's metadata before anything is sent.
pub(crate) fn validate(event: &NewEvent) -> Result<(), JetStreamError> {
    crate::id::validate_token(event.name).map_err(|e| JetStreamError::InvalidInput {
        what: format!("event name {:?}", event.name),
        reason: e.to_string(),
    })?;
    check_value("correlation id", &event.correlation_id)?;
    if let Some(causation) = &event.causation_id {
        check_value("causation id", causation)?;
    }
    for (name, value) in &event.headers {
        check_name(name)?;
        if has_control(value) {
            check_value(&format!("user header {name:?}"), value)?;
        }
    }
    event
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_err(|_| JetStreamError::InvalidInput {
            what: "event timestamp".into(),
            reason: "it is before 1970".into(),
        })?;
    Ok(())
}

/// An upper bound of the bytes one event's message takes against the server's max payload:
/// its payload, its metadata headers, and room for the NATS control headers of an append.
pub(crate) fn message_size(event: &NewEvent, command_id: Option<&str>) -> usize {
    // Fixed header names and values (ids, numbers, codec, OCC and batch headers) stay well
    // below this; what varies is counted below.
    const FIXED: usize = 640;
    let command = command_id.map_or(0, |c| 2 * c.len());
    let causation = event.causation_id.as_ref().map_or(0, String::len);
    let user: usize = (event.headers.iter())
        .map(|(name, value)| 2 * (USER_PREFIX.len() + name.len() + value.len() + 4))
        .sum();
    FIXED
        + event.payload.len()
        + event.name.len()
        + event.correlation_id.len()
        + causation
        + command
        + user
}

/// The headers of one event message (without NATS control headers). Call [`validate`] first.
pub(crate) fn encode(event: &NewEvent, sequence: u64, command_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut id = Uuid::encode_buffer();
    headers.insert(
        name::EVENT_ID,
        &*event.id.hyphenated().encode_lower(&mut id),
    );
    headers.insert(name::EVENT_NAME, event.name);
    headers.insert(name::EVENT_VERSION, HeaderValue::from(event.version));
    headers.insert(name::CODEC, event.codec.as_str());
    headers.insert(name::SEQUENCE, HeaderValue::from(sequence));
    headers.insert(name::CORRELATION, event.correlation_id.as_str());
    if let Some(causation) = &event.causation_id {
        headers.insert(name::CAUSATION, causation.as_str());
    }
    if let Some(command) = command_id {
        headers.insert(name::COMMAND, command);
    }
    let nanos = event
        .timestamp
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    headers.insert(
        name::TIMESTAMP,
        HeaderValue::from(u64::try_from(nanos).unwrap_or(u64::MAX)),
    );
    for (user, value) in &event.headers {
        headers.insert(format!("{USER_PREFIX}{user}").as_str(), value.as_str());
        if user.eq_ignore_ascii_case(TRACEPARENT) {
            headers.insert(name::TRACEPARENT, value.as_str());
        }
    }
    headers
}

fn get(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.as_str())
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
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let mut tokens = subject_rest.splitn(3, '.');
    let (Some(aggregate_type), Some(aggregate_id), Some(_name)) =
        (tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(corrupt(format!(
            "subject tail {subject_rest:?} is not <type>.<id>.<event>"
        )));
    };
    let required = |name: HeaderName| {
        get(headers, name.clone()).ok_or_else(|| corrupt(format!("header {name} is missing")))
    };
    let id = Uuid::parse_str(required(name::EVENT_ID)?)
        .map_err(|e| corrupt(format!("header {EVENT_ID}: {e}")))?;
    let version = required(name::EVENT_VERSION)?
        .parse::<u32>()
        .map_err(|e| corrupt(format!("header {EVENT_VERSION}: {e}")))?;
    let codec_name = required(name::CODEC)?;
    let codec =
        Codec::parse(codec_name).ok_or_else(|| corrupt(format!("unknown codec {codec_name:?}")))?;
    let sequence = required(name::SEQUENCE)?
        .parse::<u64>()
        .map_err(|e| corrupt(format!("header {SEQUENCE}: {e}")))?;
    let nanos = required(name::TIMESTAMP)?
        .parse::<u64>()
        .map_err(|e| corrupt(format!("header {TIMESTAMP}: {e}")))?;
    let mut user = BTreeMap::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if let Some(user_name) = name.strip_prefix(USER_PREFIX) {
            if let Some(value) = values.first() {
                user.insert(user_name.to_owned(), value.as_str().to_owned());
            }
        }
    }
    Ok(StoredEvent {
        id,
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        position,
        name: required(name::EVENT_NAME)?.to_owned(),
        version,
        codec,
        payload,
        timestamp: UNIX_EPOCH + Duration::from_nanos(nanos),
        correlation_id: required(name::CORRELATION)?.to_owned(),
        causation_id: get(headers, name::CAUSATION).map(str::to_owned),
        command_id: get(headers, name::COMMAND).map(str::to_owned),
        headers: user,
    })
}
