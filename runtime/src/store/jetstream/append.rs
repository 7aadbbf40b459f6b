//! Publishing a command's events: one message for one event, one atomic batch for several,
//! always guarded by the aggregate's last stream sequence.

use async_nats::HeaderMap;
use serde::Deserialize;

use super::error::JetStreamError;
use super::headers;
use crate::store::{NewEvent, StoreError};

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

/// Builds the messages of a commit: event headers, dedupe id, and the OCC guard on the first.
pub(crate) fn messages(
    subject_stem: &str,
    wildcard: &str,
    events: &[NewEvent],
    first_sequence: u64,
    expected_last_seq: u64,
    command_id: Option<&str>,
    msg_id_stem: &str,
) -> Vec<Outgoing> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let sequence = first_sequence + i as u64;
            let mut hdrs = headers::encode(event, sequence, command_id);
            if i == 0 {
                hdrs.insert(headers::EXPECTED_SUBJECT_SEQ, expected_last_seq.to_string());
                hdrs.insert(headers::EXPECTED_SUBJECT_SEQ_SUBJECT, wildcard);
            }
            if let Some(command) = command_id {
                hdrs.insert(
                    headers::MSG_ID,
                    format!("{msg_id_stem}:{command}:{i}").as_str(),
                );
            }
            Outgoing {
                subject: format!("{subject_stem}.{}", event.name),
                headers: hdrs,
                payload: event.payload.clone(),
            }
        })
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
        message.headers.insert(headers::BATCH_ID, batch_id.as_str());
        message
            .headers
            .insert(headers::BATCH_SEQ, (i + 1).to_string());
        let last = i + 1 == count;
        if last {
            message.headers.insert(headers::BATCH_COMMIT, "1");
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
