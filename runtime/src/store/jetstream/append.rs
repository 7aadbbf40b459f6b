//! The messages of one commit and the publish protocol: one event is one guarded publish,
//! several are one JetStream atomic batch (all stored or none), retried while the server has
//! too many batches open.

use std::time::Duration;

use async_nats::header::HeaderValue;
use async_nats::HeaderMap;
use serde::Deserialize;

use super::error::JetStreamError;
use super::headers;
use crate::store::{AggregateKey, NewEvent};
use crate::wire;

/// JetStream error codes that mean "another writer got there first".
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// The clustered form of [`WRONG_LAST_SEQUENCE`] for per-subject expectations (also returned
/// while another write to the aggregate is in flight).
const WRONG_LAST_SUBJECT_SEQUENCE: u64 = 10164;
/// Too many atomic batches open on the stream: the batch was refused whole.
const TOO_MANY_BATCHES: u64 = 10210;

/// How long a batch refused for [`TOO_MANY_BATCHES`] waits before it is sent again: other
/// processes share the server's limit of 50 open batches per stream, and their batches close
/// within milliseconds. A refused batch stored nothing, so sending it again is safe.
const TOO_MANY_BATCHES_RETRY: RetryPolicy = RetryPolicy {
    attempts: 30,
    first_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(100),
};

/// Exponential delays between attempts of one operation.
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delays after each attempt but the last, jittered so that processes refused
    /// together do not come back together.
    fn delays(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// How a publish ended.
#[derive(Debug)]
pub(crate) enum Published {
    /// Stored; the stream sequence of the last message.
    Stored(u64),
    /// The server's dedupe window recognised the message id: nothing was stored; the stream
    /// sequence of the first message with that id (0 when the server did not say).
    Duplicate(u64),
    /// The aggregate moved on since the guard's sequence: nothing was stored.
    Conflict,
}

/// One publish: where, which headers and payload.
#[derive(Clone)]
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
    pub filter: &'a str,
    /// Stream sequence of the aggregate's last event (0: none).
    pub expected_last_seq: u64,
    pub command_id: Option<&'a str>,
    pub key: &'a AggregateKey,
}

/// Builds the messages of a commit, the first event at aggregate version `first_sequence`:
/// event headers on each, the dedupe id on each when there is a command id, the OCC guard on
/// the first (the server checks a batch's guards before storing any of it).
pub(crate) fn messages(
    guard: &Guard<'_>,
    events: &[NewEvent],
    first_sequence: u64,
) -> Vec<Outgoing> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let mut hdrs = headers::encode(event, first_sequence + index as u64);
            if index == 0 {
                hdrs.insert(
                    headers::name::EXPECTED_SUBJECT_SEQ,
                    HeaderValue::from(guard.expected_last_seq),
                );
                hdrs.insert(headers::name::EXPECTED_SUBJECT_SEQ_SUBJECT, guard.filter);
            }
            if let Some(command) = guard.command_id {
                let (ty, id) = (guard.key.aggregate_type, guard.key.id.as_str());
                let msg_id = wire::message_id(ty, id, command, index);
                hdrs.insert(headers::name::MSG_ID, msg_id.as_str());
            }
            let mut subject =
                String::with_capacity(guard.subject_stem.len() + 1 + event.name.len());
            subject.push_str(guard.subject_stem);
            subject.push('.');
            subject.push_str(event.name);
            Outgoing {
                subject,
                headers: hdrs,
                payload: event.payload.clone(),
            }
        })
        .collect()
}

/// Publishes a commit: one message alone, several as an atomic batch.
pub(crate) async fn commit(
    client: &async_nats::Client,
    batches: &tokio::sync::Semaphore,
    mut messages: Vec<Outgoing>,
) -> Result<Published, JetStreamError> {
    if messages.len() == 1 {
        let message = messages.pop().expect("one message");
        return single(client, message).await;
    }
    // The server keeps at most 50 open batches per stream (error 10210 past it).
    let _permit = batches
        .acquire()
        .await
        .map_err(|e| JetStreamError::request("wait for a free batch slot", e))?;
    for delay in TOO_MANY_BATCHES_RETRY.delays() {
        // Boxed: a batch's future is large, and one-event commits never need it.
        match Box::pin(batch(client, messages.clone())).await {
            Err(JetStreamError::Api {
                err_code: TOO_MANY_BATCHES,
                ..
            }) => tokio::time::sleep(delay).await,
            other => return other,
        }
    }
    Box::pin(batch(client, messages)).await
}

/// Publishes one message and waits for its ack.
pub(crate) async fn single(
    client: &async_nats::Client,
    message: Outgoing,
) -> Result<Published, JetStreamError> {
    let reply = request(client, message).await?;
    parse_ack(&reply)
}

/// Publishes several messages as one atomic batch: all are stored, or none.
///
/// The first and the committing message are requests; the ones between are plain publishes
/// (the server answers them only on error, which the commit reports too).
async fn batch(
    client: &async_nats::Client,
    messages: Vec<Outgoing>,
) -> Result<Published, JetStreamError> {
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
                .await?;
        }
    }
    Ok(result)
}

async fn request(
    client: &async_nats::Client,
    message: Outgoing,
) -> Result<async_nats::Message, JetStreamError> {
    let request = async_nats::Request::new()
        .headers(message.headers)
        .payload(message.payload);
    let subject = async_nats::Subject::from(message.subject);
    client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| JetStreamError::from_request(e, &subject))
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

/// An error a JetStream API reply carries.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    #[serde(default)]
    pub(crate) code: u16,
    #[serde(default)]
    pub(crate) err_code: u64,
    #[serde(default)]
    pub(crate) description: String,
}

fn parse_ack(message: &async_nats::Message) -> Result<Published, JetStreamError> {
    if let Some(status) = message.status {
        if status.as_u16() == 503 {
            return Err(JetStreamError::NoResponders("publish".into()));
        }
    }
    let ack: Ack = serde_json::from_slice(&message.payload).map_err(|e| {
        let ack = String::from_utf8_lossy(&message.payload);
        JetStreamError::request(format!("read the publish ack {ack:?}"), e)
    })?;
    if let Some(error) = ack.error {
        return match error.err_code {
            WRONG_LAST_SEQUENCE | WRONG_LAST_SUBJECT_SEQUENCE => Ok(Published::Conflict),
            _ => Err(JetStreamError::Api {
                code: error.code,
                err_code: error.err_code,
                description: error.description,
            }),
        };
    }
    if ack.duplicate {
        return Ok(Published::Duplicate(ack.seq.unwrap_or(0)));
    }
    ack.seq
        .map(Published::Stored)
        .ok_or_else(|| JetStreamError::Protocol("publish ack without seq".into()))
}
