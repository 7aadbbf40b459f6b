//! The completion log behind
//! [`Idempotency::Markers`](crate::subscriber::Idempotency::Markers).
//!
//! Stream `<stream>_<durable>_DONE` holds, on subject `jetsource_done.<stream>.<durable>`,
//! messages whose payload is the concatenated 16-byte ids of events the subscriber completed.
//! Completions are group-committed: a writer task takes every completion reported since the
//! previous write started and stores them as one message, with up to [`ROUNDS_IN_FLIGHT`]
//! writes in flight, then hands the round's completions back (to be acked) in one piece. So a
//! busy subscriber writes one small message per round trip instead of one per event, and pays
//! no task or channel per event for the wait.
//!
//! Lookups are in memory: the ids this process completed (bounded, most recent kept) plus, at
//! start, the ids of the log's last [`TAIL`] before its newest entry: the completions whose acks
//! a crash of this process or of the server could have lost.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::placement::Placement;
use crate::subscriber::error::SubscriberError;

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

/// The most recent completions, oldest evicted first. Grows as needed up to its capacity
/// (allocating a million entries up front made every start and stop cost milliseconds).
struct Known {
    ids: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl Known {
    fn new(capacity: usize) -> Self {
        Known {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn insert(&mut self, id: Uuid) {
        if !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

fn lock(known: &Mutex<Known>) -> MutexGuard<'_, Known> {
    match known.lock() {
        Ok(known) => known,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Shared by the workers: the in-memory set and the writer's queue. `T` travels with each
/// completion and comes back, with the rest of its round, once the round is stored.
pub(crate) struct DoneLog<T> {
    known: Arc<Mutex<Known>>,
    tx: mpsc::UnboundedSender<(Uuid, T)>,
}

impl<T: Send + 'static> DoneLog<T> {
    /// Creates the log stream if needed, loads its tail and starts the writer, which sends
    /// every stored round's completions to `stored`.
    pub(crate) async fn open(
        js: &jetstream::Context,
        event_stream: &str,
        durable: &str,
        ttl: Duration,
        placement: Placement,
        stopping: watch::Receiver<bool>,
        stored: mpsc::UnboundedSender<Vec<T>>,
    ) -> Result<DoneLog<T>, SubscriberError> {
        let subject = subject(event_stream, durable);
        let log = js
            .get_or_create_stream(stream::Config {
                name: stream_name(event_stream, durable),
                subjects: vec![subject.clone()],
                storage: placement.storage,
                num_replicas: placement.replicas,
                max_age: ttl,
                ..Default::default()
            })
            .await
            .map_err(|e| SubscriberError::js("creating the completion log", e))?;
        let mut known = Known::new(KNOWN);
        for id in load_tail(&log, &subject).await? {
            known.insert(id);
        }
        tracing::debug!(loaded = known.len(), "completion log tail loaded");
        let known = Arc::new(Mutex::new(known));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(
            js.clone(),
            subject,
            rx,
            known.clone(),
            stopping,
            stored,
        ));
        Ok(DoneLog { known, tx })
    }

    /// Whether the event was completed (by this process, or shortly before the last stop).
    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        lock(&self.known).contains(id)
    }

    /// Records a completion; `then` comes back through the `stored` channel once the
    /// completion is stored (or storing was given up at shutdown). `Err(then)` when the writer
    /// is gone.
    pub(crate) fn complete(&self, id: Uuid, then: T) -> Result<(), T> {
        self.tx.send((id, then)).map_err(|e| e.0 .1)
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

/// Rounds stored at once. More rounds in flight means each completion waits less for a free
/// slot (its aggregate's next event waits for it), at the price of more, smaller writes.
const ROUNDS_IN_FLIGHT: usize = 8;

/// Group commit: each round is one stored message holding every completion reported since the
/// previous round started; up to [`ROUNDS_IN_FLIGHT`] rounds are in flight.
async fn write<T>(
    js: jetstream::Context,
    subject: String,
    mut rx: mpsc::UnboundedReceiver<(Uuid, T)>,
    known: Arc<Mutex<Known>>,
    stopping: watch::Receiver<bool>,
    stored_tx: mpsc::UnboundedSender<Vec<T>>,
) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            first = rx.recv(), if open && in_flight.len() < ROUNDS_IN_FLIGHT => {
                let Some((id, then)) = first else {
                    open = false;
                    continue;
                };
                let mut ids = Vec::with_capacity(16 * 64);
                ids.extend_from_slice(id.as_bytes());
                let mut round = vec![then];
                while round.len() < ROUND {
                    match rx.try_recv() {
                        Ok((id, then)) => {
                            ids.extend_from_slice(id.as_bytes());
                            round.push(then);
                        }
                        Err(_) => break,
                    }
                }
                let payload = bytes::Bytes::from(ids);
                let store = store_round(js.clone(), subject.clone(), payload.clone(), stopping.clone());
                in_flight.push(async move { (payload, round, store.await) });
            }
            Some((payload, round, stored)) = in_flight.next(), if !in_flight.is_empty() => {
                if stored {
                    let mut known = lock(&known);
                    for id in decode(&payload) {
                        known.insert(id);
                    }
                } else {
                    tracing::error!(
                        completions = round.len(),
                        "shutting down without storing completions; acking anyway"
                    );
                }
                // The receiver is gone only once the subscriber stopped.
                let _ = stored_tx.send(round);
            }
        }
    }
}

/// Stores one round, retrying until the server takes it (true) or shutdown begins (false).
async fn store_round(
    js: jetstream::Context,
    subject: String,
    payload: bytes::Bytes,
    mut stopping: watch::Receiver<bool>,
) -> bool {
    use backon::BackoffBuilder;
    // Until the server takes it: from 100 ms, doubling, jittered, at most 2 s apart.
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempt = 0u32;
    loop {
        let result = match js.publish(subject.clone(), payload.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => return true,
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "storing completions failed; retrying");
                if *stopping.borrow() {
                    return false;
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopping.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keeps_the_most_recent_completions() {
        let mut known = Known::new(3);
        let ids: Vec<Uuid> = (0..5u128).map(Uuid::from_u128).collect();
        for id in &ids {
            known.insert(*id);
        }
        known.insert(ids[4]);
        assert_eq!(known.len(), 3);
        assert!(!known.contains(&ids[1]));
        assert!(ids[2..].iter().all(|id| known.contains(id)));
    }

    #[test]
    fn payload_is_concatenated_ids() {
        let ids = [Uuid::from_u128(7), Uuid::from_u128(u128::MAX)];
        let payload: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
        assert_eq!(decode(&payload).collect::<Vec<_>>(), ids);
    }
}
