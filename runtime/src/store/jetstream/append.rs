//! Publishing a command's events: one message for one event, one atomic batch for several,
//! always guarded by the aggregate's last stream sequence.

use async_nats::header::HeaderValue;
use async_nats::HeaderMap;
use serde::Deserialize;

use super::error::JetStreamError;
use super::headers;
use crate::store::{AggregateKey, NewEvent, StoreError};

/// JetStream error codes that mean "another writer got there first".
pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;
/// The clustered form of [`WRONG_LAST_SEQUENCE`] for per-subject expectations.
pub(crate) const WRONG_LAST_SUBJECT_SEQUENCE: u64 = 10164;

/// Too many atomic batches open on the stream: the batch was refused whole.
pub(crate) const TOO_MANY_BATCHES: u64 = 10210;

/// Whether `error` is the server refusing a batch because too many are open.
pub(crate) fn is_too_many_batches(error: &StoreError) -> bool {
    match error {
        StoreError::Backend(inner) => matches!(
            inner.downcast_ref::<JetStreamError>(),
            Some(JetStreamError::Api {
                err_code: TOO_MANY_BATCHES,
                ..
            })
        ),
        _ => false,
    }
}

/// Copies messages (headers and payload are cheap to clone) for a retry.
pub(crate) fn clone_all(messages: &[Outgoing]) -> Vec<Outgoing> {
    messages
        .iter()
        .map(|m| Outgoing {
            subject: m.subject.clone(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
        })
        .collect()
}

/// The server's answer to a publish.
#[derive(Debug, Deserialize)]
struct Ack {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// How a publish ended.
#[derive(Debug)]
pub(crate) enum Published {
    /// Stored; the stream sequence of the last message.
    Stored(u64),
    /// The server's dedupe window recognised the message id: nothing was stored.
    Duplicate,
    /// The aggregate moved on since `last_seq`: nothing was stored.
    Conflict,
}

/// One publish: where, which headers and payload.
pub(crate) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

/// What every message of one commit shares: where it goes, the OCC guard, the command id.
pub(crate) struct Guard<'a> {
    /// `<prefix>.<type>.<id>`.
    pub subject_stem: &'a str,
    /// `<prefix>.<type>.<id>.*`.
    pub wildcard: &'a str,
    /// Stream sequence of the aggregate's last event (0: none).
    pub expected_last_seq: u64,
    pub command_id: Option<&'a str>,
    pub key: &'a AggregateKey,
}

/// Builds message `index` of a commit: event headers, dedupe id, and the OCC guard on the first.
pub(crate) fn message(
    guard: &Guard<'_>,
    event: &NewEvent,
    index: usize,
    sequence: u64,
) -> Outgoing {
    let mut hdrs = headers::encode(event, sequence, guard.command_id);
    if index == 0 {
        hdrs.insert(
            headers::name::EXPECTED_SUBJECT_SEQ,
            HeaderValue::from(guard.expected_last_seq),
        );
        hdrs.insert(headers::name::EXPECTED_SUBJECT_SEQ_SUBJECT, guard.wildcard);
    }
    if let Some(command) = guard.command_id {
        let key = guard.key;
        hdrs.insert(
            headers::name::MSG_ID,
            format!("{}.{}:{command}:{index}", key.aggregate_type, key.id).as_str(),
        );
    }
    let mut subject = String::with_capacity(guard.subject_stem.len() + 1 + event.name.len());
    subject.push_str(guard.subject_stem);
    subject.push('.');
    subject.push_str(event.name);
    Outgoing {
        subject,
        headers: hdrs,
        payload: event.payload.clone(),
    }
}

/// Builds the messages of a commit, the first event at aggregate version `first_sequence`.
pub(crate) fn messages(
    guard: &Guard<'_>,
    events: &[NewEvent],
    first_sequence: u64,
) -> Vec<Outgoing> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| message(guard, event, i, first_sequence + i as u64))
        .collect()
}

fn parse_ack(message: &async_nats::Message) -> Result<Published, StoreError> {
    if let Some(status) = message.status {
        if status.as_u16() == 503 {
            return Err(JetStreamError::NoResponders("publish".into()).into());
        }
    }
    let ack: Ack = serde_json::from_slice(&message.payload).map_err(|e| {
        JetStreamError::Protocol(format!(
            "publish ack {:?}: {e}",
            String::from_utf8_lossy(&message.payload)
        ))
    })?;
    if let Some(error) = ack.error {
        return match error.err_code {
            WRONG_LAST_SEQUENCE | WRONG_LAST_SUBJECT_SEQUENCE => Ok(Published::Conflict),
            _ => Err(JetStreamError::Api {
                code: error.code,
                err_code: error.err_code,
                description: error.description,
            }
            .into()),
        };
    }
    if ack.duplicate {
        return Ok(Published::Duplicate);
    }
    ack.seq
        .map(Published::Stored)
        .ok_or_else(|| JetStreamError::Protocol("publish ack without seq".into()).into())
}

async fn request(
    client: &async_nats::Client,
    message: Outgoing,
) -> Result<async_nats::Message, StoreError> {
    client
        .send_request(
            message.subject,
            async_nats::Request::new()
                .headers(message.headers)
                .payload(message.payload),
        )
        .await
        .map_err(|e| StoreError::from(JetStreamError::from(e)))
}

/// Publishes one message and waits for its ack.
pub(crate) async fn single(
    client: &async_nats::Client,
    message: Outgoing,
) -> Result<Published, StoreError> {
    let reply = request(client, message).await?;
    parse_ack(&reply)
}

/// Publishes several messages as one atomic batch: all are stored, or none.
///
/// The first and the committing message are requests; the ones between are plain publishes
/// (the server answers them only on error, which the commit reports too).
pub(crate) async fn batch(
    client: &async_nats::Client,
    messages: Vec<Outgoing>,
) -> Result<Published, StoreError> {
    let batch_id = uuid::Uuid::now_v7().simple().to_string();
    let count = messages.len();
    let mut result = Published::Conflict;
    for (i, mut message) in messages.into_iter().enumerate() {
        message
            .headers
            .insert(headers::name::BATCH_ID, batch_id.as_str());
        message
            .headers
            .insert(headers::name::BATCH_SEQ, HeaderValue::from(i + 1));
        let last = i + 1 == count;
        if last {
            message.headers.insert(headers::name::BATCH_COMMIT, "1");
            result = single(client, message).await?;
        } else if i == 0 {
            // The server answers the opening message with an empty ack, or an error (for
            // example a failed OCC guard): stop early then.
            let reply = request(client, message).await?;
            if !reply.payload.is_empty() {
                match parse_ack(&reply) {
                    Ok(Published::Stored(_)) => {}
                    other => return other,
                }
            }
        } else {
            client
                .publish_with_headers(message.subject, message.headers, message.payload)
                .await
                .map_err(JetStreamError::from)?;
        }
    }
    Ok(result)
}
