//! Reading events from the stream.
//!
//! Small reads go through batched direct get (`$JS.API.DIRECT.GET.<stream>`), which creates
//! nothing on the server. Large aggregate loads drain a short-lived pull consumer (in memory,
//! one replica, no acks, like an ordered consumer) that is deleted before the load returns: the
//! server streams a consumer's messages faster than it answers a batched direct get (whose
//! replies carry six more headers each), once the consumer's creation and deletion (one round
//! trip each) are paid for. A consumer that cannot be created, or a gap in what it delivers,
//! falls back to direct get from the last event read.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;

use super::error::JetStreamError;
use super::headers::{self, name};
use crate::store::{StoreError, StoredEvent};

/// Events asked for per direct-get request.
pub(crate) const BATCH: usize = 1000;

/// Loads expected to return at least this many events drain a consumer; smaller ones use
/// direct get.
pub(crate) const CONSUMER_MIN: u64 = 128;

/// Messages asked for per pull of a load consumer.
const PULL: usize = 500;

/// Where and how to read.
pub(crate) struct Reader<'a> {
    pub client: &'a async_nats::Client,
    /// The stream, to create and delete load consumers.
    pub handle: &'a Stream,
    pub stream: &'a str,
    /// Length of the subject prefix, to cut it from subjects.
    pub prefix_len: usize,
    pub timeout: Duration,
}

/// One page of a batched direct get.
struct Page {
    events: Vec<StoredEvent>,
    /// Stream sequence of the last message read.
    last_seq: u64,
    /// Matching messages after the last one read.
    pending: u64,
}

/// Reads the events whose subject matches `filter`, from stream sequence `start_seq` on, until
/// `limit` events are read or none are left. `keep` drops events the caller does not want
/// (they still count toward nothing).
pub(crate) async fn read(
    reader: &Reader<'_>,
    filter: &str,
    start_seq: u64,
    limit: usize,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events = Vec::new();
    let mut seq = start_seq.max(1);
    while events.len() < limit {
        let want = (limit - events.len()).min(BATCH);
        let page = page(reader, filter, seq, want).await?;
        let received = page.events.len();
        events.extend(page.events.into_iter().filter(|e| keep(e)));
        if received == 0 || page.pending == 0 {
            break;
        }
        seq = page.last_seq + 1;
    }
    Ok(events)
}

/// Loads the events of one aggregate (`filter`), from stream sequence `start_seq` to the end.
/// `expected` is how many events the caller expects, when it knows (it may be off when others
/// write meanwhile: it only picks the read path). Without it, the load drains a consumer, whose
/// creation tells how many there are.
pub(crate) async fn load(
    reader: &Reader<'_>,
    filter: &str,
    start_seq: u64,
    expected: Option<u64>,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut seq = start_seq.max(1);
    let expected = expected.unwrap_or(u64::MAX);
    if expected < CONSUMER_MIN {
        return read(reader, filter, seq, usize::MAX, keep).await;
    }
    let mut events = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(BATCH));
    match drain(reader, filter, seq, &keep, &mut events).await {
        None => return Ok(events),
        Some(next) => seq = next,
    }
    let rest = read(reader, filter, seq, usize::MAX, keep).await?;
    events.extend(rest);
    Ok(events)
}

/// Reads from `seq` to the end through a consumer created for this read and deleted after it.
/// Returns `None` when done, or the stream sequence to go on from with direct get when the
/// consumer could not be created or delivered out of order.
async fn drain(
    reader: &Reader<'_>,
    filter: &str,
    seq: u64,
    keep: &impl Fn(&StoredEvent) -> bool,
    events: &mut Vec<StoredEvent>,
) -> Option<u64> {
    let consumer_name = format!("jetsource-load-{}", uuid::Uuid::now_v7().simple());
    let config = consumer::pull::Config {
        name: Some(consumer_name.clone()),
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
        ack_policy: AckPolicy::None,
        max_deliver: 1,
        filter_subject: filter.to_owned(),
        // Removed by the server if this process dies before deleting it.
        inactive_threshold: Duration::from_secs(5),
        num_replicas: 1,
        memory_storage: true,
        ..Default::default()
    };
    let consumer: consumer::PullConsumer = match reader.handle.create_consumer(config).await {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::debug!(%error, "load consumer not created, reading by direct get");
            // It may exist even though the answer was lost.
            let _ = reader.handle.delete_consumer(&consumer_name).await;
            return Some(seq);
        }
    };
    let pending = consumer.cached_info().num_pending;
    let next = if pending == 0 {
        None
    } else {
        match pull_all(reader, &consumer, pending, seq, keep, events).await {
            Ok(()) => None,
            Err((next, error)) => {
                tracing::debug!(%error, "load consumer stopped, reading on by direct get");
                Some(next)
            }
        }
    };
    // Deleted off the load's path: the load needs nothing more from it, and waiting for the
    // answer would add a round trip to every large load. The inactivity threshold removes it
    // should the deletion fail.
    let stream = reader.handle.clone();
    tokio::spawn(async move {
        if let Err(error) = stream.delete_consumer(&consumer_name).await {
            tracing::warn!(%error, consumer = %consumer_name, "load consumer not deleted");
        }
    });
    next
}

/// Pulls until the consumer reports nothing pending. On failure, returns the stream sequence
/// after the last event read.
async fn pull_all(
    reader: &Reader<'_>,
    consumer: &consumer::PullConsumer,
    pending: u64,
    seq: u64,
    keep: &impl Fn(&StoredEvent) -> bool,
    events: &mut Vec<StoredEvent>,
) -> Result<(), (u64, StoreError)> {
    let mut next = seq;
    let fail = |next: u64, error: StoreError| Err((next, error));
    // Pull in pages, re-pulling before one runs dry (what async-nats' ordered consumer does).
    let per_pull = usize::try_from(pending).unwrap_or(PULL).clamp(1, PULL);
    let mut messages = match consumer
        .stream()
        .max_messages_per_batch(per_pull)
        .expires(reader.timeout)
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(e) => {
            return fail(
                next,
                JetStreamError::request("pull the load consumer", e).into(),
            )
        }
    };
    let mut delivered = 0u64;
    loop {
        let message = match tokio::time::timeout(reader.timeout, messages.next()).await {
            Err(_) => return fail(next, JetStreamError::Timeout.into()),
            Ok(None) => {
                return fail(
                    next,
                    JetStreamError::Client("consumer stream ended".into()).into(),
                )
            }
            Ok(Some(Err(e))) => {
                return fail(
                    next,
                    JetStreamError::request("read the load consumer", e).into(),
                )
            }
            Ok(Some(Ok(message))) => message,
        };
        let (position, consumer_seq, left) = match message.info() {
            Ok(info) => (info.stream_sequence, info.consumer_sequence, info.pending),
            Err(e) => {
                let error = JetStreamError::request("read a load message's metadata", e);
                return fail(next, error.into());
            }
        };
        delivered += 1;
        if consumer_seq != delivered || position < next {
            return fail(
                next,
                JetStreamError::Protocol(format!(
                    "load consumer delivered {consumer_seq} (stream {position}) after {}",
                    delivered - 1
                ))
                .into(),
            );
        }
        let Some(hdrs) = message.message.headers.as_ref() else {
            return fail(
                next,
                JetStreamError::Protocol("message without headers".into()).into(),
            );
        };
        let rest = message
            .message
            .subject
            .get(reader.prefix_len + 1..)
            .unwrap_or("");
        match headers::decode(rest, position, hdrs, message.message.payload.clone()) {
            Ok(event) if keep(&event) => events.push(event),
            Ok(_) => {}
            Err(error) => return fail(next, error),
        }
        next = position + 1;
        if left == 0 {
            return Ok(());
        }
    }
}

async fn page(
    reader: &Reader<'_>,
    filter: &str,
    seq: u64,
    batch: usize,
) -> Result<Page, StoreError> {
    let Reader {
        client,
        stream,
        prefix_len,
        timeout,
        ..
    } = *reader;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(JetStreamError::from)?;
    let request = serde_json::json!({ "seq": seq, "batch": batch, "next_by_subj": filter });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{stream}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(JetStreamError::from)?;
    let mut out = Page {
        events: Vec::with_capacity(batch.min(64)),
        last_seq: seq,
        pending: 0,
    };
    loop {
        let message = match tokio::time::timeout(timeout, replies.next()).await {
            Err(_) => return Err(JetStreamError::Timeout.into()),
            Ok(None) => {
                return Err(JetStreamError::Client("subscription closed".into()).into());
            }
            Ok(Some(message)) => message,
        };
        if let Some(status) = message.status {
            match status.as_u16() {
                // End of batch.
                204 => return Ok(out),
                // Nothing matches from `seq` on.
                404 => return Ok(out),
                503 => {
                    return Err(JetStreamError::NoResponders(format!(
                        "direct get on stream {stream}"
                    ))
                    .into())
                }
                200 => {}
                code => {
                    return Err(JetStreamError::Api {
                        code,
                        err_code: 0,
                        description: message.description.unwrap_or_default(),
                    }
                    .into())
                }
            }
        }
        let Some(hdrs) = message.headers.as_ref() else {
            return Err(JetStreamError::Protocol("direct get reply without headers".into()).into());
        };
        let position = hdrs
            .get(name::NATS_SEQUENCE)
            .and_then(|s| s.as_str().parse::<u64>().ok())
            .ok_or_else(|| JetStreamError::Protocol("reply lacks Nats-Sequence".into()))?;
        let subject = hdrs
            .get(name::NATS_SUBJECT)
            .map(|s| s.as_str())
            .ok_or_else(|| JetStreamError::Protocol("reply lacks Nats-Subject".into()))?;
        out.pending = hdrs
            .get(name::NATS_NUM_PENDING)
            .and_then(|s| s.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        out.last_seq = position;
        let rest = subject.get(prefix_len + 1..).unwrap_or("");
        let event = headers::decode(rest, position, hdrs, message.payload.clone())?;
        out.events.push(event);
    }
}
