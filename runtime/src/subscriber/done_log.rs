//! The completion log behind [`Idempotency::Markers`](super::Idempotency::Markers).
//!
//! Stream `<stream>_<durable>_DONE` holds, on subject `jetsource_done.<stream>.<durable>`,
//! messages whose payload is the concatenated 16-byte ids of events the subscriber completed.
//! Completions are group-committed: a writer task takes every completion reported while the
//! previous write was in flight and stores them as one message, then releases their acks. So a
//! busy subscriber writes one small message per round trip instead of one per event.
//!
//! Lookups are in memory: the ids this process completed (bounded, most recent kept) plus, at
//! start, the ids of the log's last [`TAIL`] before its newest entry: the completions whose acks
//! a crash of this process or of the server could have lost.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::SubscriberError;

/// How far before the newest completion the start-up load reaches.
pub(crate) const TAIL: Duration = Duration::from_secs(600);
/// Completions kept in memory.
const KNOWN: usize = 1_000_000;
/// Completions per stored message at most.
const ROUND: usize = 4_096;

pub(crate) fn stream_name(event_stream: &str, durable: &str) -> String {
    format!("{event_stream}_{durable}_DONE")
}

pub(crate) fn subject(event_stream: &str, durable: &str) -> String {
    format!("jetsource_done.{event_stream}.{durable}")
}

type Waiter = (Uuid, oneshot::Sender<()>);

/// Shared by the workers: the in-memory set and the writer's queue.
pub(crate) struct DoneLog {
    known: Arc<Mutex<lru::LruCache<Uuid, ()>>>,
    tx: mpsc::UnboundedSender<Waiter>,
}

impl DoneLog {
    /// Creates the log stream if needed, loads its tail and starts the writer.
    pub(crate) async fn open(
        js: &jetstream::Context,
        event_stream: &str,
        durable: &str,
        ttl: Duration,
        storage: stream::StorageType,
        stopping: watch::Receiver<bool>,
    ) -> Result<DoneLog, SubscriberError> {
        let subject = subject(event_stream, durable);
        let log = js
            .get_or_create_stream(stream::Config {
                name: stream_name(event_stream, durable),
                subjects: vec![subject.clone()],
                storage,
                max_age: ttl,
                ..Default::default()
            })
            .await
            .map_err(|e| SubscriberError::js("creating the completion log", e))?;
        let capacity = NonZeroUsize::new(KNOWN).unwrap_or(NonZeroUsize::MIN);
        let mut known = lru::LruCache::new(capacity);
        for id in load_tail(&log, &subject).await? {
            known.put(id, ());
        }
        tracing::debug!(loaded = known.len(), "completion log tail loaded");
        let known = Arc::new(Mutex::new(known));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(js.clone(), subject, rx, known.clone(), stopping));
        Ok(DoneLog { known, tx })
    }

    /// Whether the event was completed (by this process, or shortly before the last stop).
    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        match self.known.lock() {
            Ok(known) => known.contains(id),
            Err(poisoned) => poisoned.into_inner().contains(id),
        }
    }

    /// Records a completion; the receiver resolves once it is stored (or storing was given up
    /// at shutdown).
    pub(crate) fn complete(&self, id: Uuid) -> oneshot::Receiver<()> {
        let (done, stored) = oneshot::channel();
        // If the writer is gone the receiver resolves at once with an error.
        let _ = self.tx.send((id, done));
        stored
    }
}

async fn load_tail(log: &stream::Stream, subject: &str) -> Result<Vec<Uuid>, SubscriberError> {
    let last = match log.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => msg,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(SubscriberError::js("reading the completion log", e)),
    };
    let tail = i128::try_from(TAIL.as_nanos()).unwrap_or(i128::MAX);
    let start_time =
        async_nats::datetime::from_nanos(last.time.unix_timestamp_nanos().saturating_sub(tail))
            .unwrap_or(last.time);
    let reader = log
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| SubscriberError::js("reading the completion log", e))?;
    let mut messages = reader
        .messages()
        .await
        .map_err(|e| SubscriberError::js("reading the completion log", e))?;
    let mut ids = Vec::new();
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| SubscriberError::js("reading the completion log", e))?;
        ids.extend(decode(&msg.payload));
        let info = msg
            .info()
            .map_err(|e| SubscriberError::js("reading the completion log", e))?;
        if info.stream_sequence >= last.sequence || info.pending == 0 {
            break;
        }
    }
    Ok(ids)
}

fn decode(payload: &[u8]) -> impl Iterator<Item = Uuid> + '_ {
    payload.chunks_exact(16).filter_map(|chunk| {
        let bytes: [u8; 16] = chunk.try_into().ok()?;
        Some(Uuid::from_bytes(bytes))
    })
}

/// Rounds stored at once.
const ROUNDS_IN_FLIGHT: usize = 4;

/// Group commit: each round is one stored message holding every completion reported since the
/// previous round started; up to [`ROUNDS_IN_FLIGHT`] rounds are in flight.
async fn write(
    js: jetstream::Context,
    subject: String,
    mut rx: mpsc::UnboundedReceiver<Waiter>,
    known: Arc<Mutex<lru::LruCache<Uuid, ()>>>,
    stopping: watch::Receiver<bool>,
) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            first = rx.recv(), if open && in_flight.len() < ROUNDS_IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut round = vec![first];
                while round.len() < ROUND {
                    match rx.try_recv() {
                        Ok(next) => round.push(next),
                        Err(_) => break,
                    }
                }
                in_flight.push(store_round(js.clone(), subject.clone(), round, stopping.clone()));
            }
            Some((round, stored)) = in_flight.next(), if !in_flight.is_empty() => {
                if stored {
                    let mut known = match known.lock() {
                        Ok(known) => known,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    for (id, _) in &round {
                        known.put(*id, ());
                    }
                } else {
                    tracing::error!(
                        completions = round.len(),
                        "shutting down without storing completions; acking anyway"
                    );
                }
                for (_, done) in round {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Stores one round, retrying until the server takes it or shutdown begins.
async fn store_round(
    js: jetstream::Context,
    subject: String,
    round: Vec<Waiter>,
    mut stopping: watch::Receiver<bool>,
) -> (Vec<Waiter>, bool) {
    let payload: Vec<u8> = round.iter().flat_map(|(id, _)| *id.as_bytes()).collect();
    let payload = bytes::Bytes::from(payload);
    let mut attempt = 0u32;
    loop {
        let result = match js.publish(subject.clone(), payload.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => return (round, true),
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "storing completions failed; retrying");
                if *stopping.borrow() {
                    return (round, false);
                }
                let delay = Duration::from_millis(100 * u64::from(attempt.min(20)));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopping.wait_for(|s| *s) => {}
                }
            }
        }
    }
}
