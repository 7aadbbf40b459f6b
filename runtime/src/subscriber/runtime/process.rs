//! The workers: each handles one message to the end (acked, nak'ed or dead-lettered), retrying
//! in place, and the acks, naks and dead letters that end a message.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use async_nats::HeaderMap;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::router::{Completion, Done, Router};
use super::{Delivery, Shared, Source};
use crate::event_set::EventSet;
use crate::observability;
use crate::store::jetstream::headers;
use crate::store::StoredEvent;
use crate::subscriber::config::AckMode;
use crate::subscriber::dead_letter::{self, DeadLetterDraft, DeadLetterReason};
use crate::subscriber::decide::{self, AfterFailure};
use crate::subscriber::handle::bump;
use crate::subscriber::{HandlerError, Subscriber};

pub(super) async fn worker<S: Subscriber>(
    shared: Arc<Shared<S>>,
    work: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    done: mpsc::UnboundedSender<Done>,
) {
    loop {
        let next = work.lock().await.recv().await;
        let Some(d) = next else { break };
        let report = Done {
            key: d.key.clone(),
            source: d.source,
            seq: d.seq,
        };
        if shared.stopping() {
            nak(&d.msg).await;
        } else if let Some((id, msg)) = process(&shared, d).await {
            // The ack waits for the group commit of the completion: the completion log hands
            // it back to the dispatcher with its round. The worker moves on; the aggregate
            // stays busy until then.
            let completion = Completion { msg, report };
            let Some(log) = &shared.done else {
                unreachable!("only the completion log defers acks")
            };
            if let Err(completion) = log.complete(id, completion) {
                tracing::error!("the completion log writer is gone; acking anyway");
                ack(&shared, &completion.msg).await;
                let _ = done.send(completion.report);
            }
            continue;
        }
        let _ = done.send(report);
    }
}

/// Acks a round of completions the completion log stored and reports them done. Fast acks
/// only queue a publish, so the dispatcher sends them itself; confirmed acks wait for the
/// server, so a task sends those and reports through `done_tx`.
pub(super) async fn acked<S: Subscriber>(
    shared: &Arc<Shared<S>>,
    round: Vec<Completion>,
    router: &mut Router,
    done_tx: &mpsc::UnboundedSender<Done>,
) {
    match shared.config.ack_mode {
        AckMode::Fast => {
            for Completion { msg, report } in round {
                ack(shared, &msg).await;
                router.done(report);
            }
        }
        AckMode::Confirmed => {
            let shared = shared.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let acks = round.into_iter().map(|Completion { msg, report }| {
                    let (shared, done_tx) = (&shared, &done_tx);
                    async move {
                        ack(shared, &msg).await;
                        let _ = done_tx.send(report);
                    }
                });
                futures::future::join_all(acks).await;
            });
        }
    }
}

pub(super) async fn nak(msg: &Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "nak failed; the message comes back after the ack wait");
    }
}

async fn ack<S: Subscriber>(shared: &Shared<S>, msg: &Message) {
    let result = match shared.config.ack_mode {
        AckMode::Fast => msg.ack().await,
        AckMode::Confirmed => {
            let mut result = msg.double_ack().await;
            for _ in 0..3 {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                result = msg.double_ack().await;
            }
            result
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "ack failed; a redelivery will be skipped as a duplicate");
    }
}

/// Rebuilds the stored event from the message's original subject and position (recorded by the
/// server for sourced partition messages, by the dead-letter headers for redriven ones).
fn decode_stored<S: Subscriber>(shared: &Shared<S>, d: &Delivery) -> Result<StoredEvent, String> {
    let empty = HeaderMap::new();
    let msg_headers = d.msg.headers.as_ref().unwrap_or(&empty);
    let missing = match d.source {
        Source::Events => "a partition message lacks its original subject and position",
        Source::Redrive => "a redriven dead letter lacks its original subject or position",
    };
    let (subject, position) = d.origin.as_ref().ok_or(missing)?;
    let rest = subject
        .strip_prefix(shared.prefix.as_str())
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("subject {subject:?} is outside prefix {:?}", shared.prefix))?;
    headers::decode(rest, *position, msg_headers, d.msg.payload.clone()).map_err(|e| e.to_string())
}

/// Waits `delay`; false when shutdown began meanwhile.
async fn pause<S: Subscriber>(shared: &Shared<S>, delay: Duration) -> bool {
    let mut stop = shared.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => !shared.stopping(),
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// A completed event whose ack waits for the completion log.
type Deferred = (uuid::Uuid, Message);

/// Handles one message to the end (acked, nak'ed or dead-lettered), or returns the ack still
/// to send once its completion is stored.
async fn process<S: Subscriber>(shared: &Shared<S>, d: Delivery) -> Option<Deferred> {
    let stored = match decode_stored(shared, &d) {
        Ok(stored) => stored,
        Err(reason) => {
            dead_letter(shared, &d, DeadLetterReason::Corrupt, &reason, d.delivered).await;
            return None;
        }
    };
    let redriven = d.source == Source::Redrive;
    let mut event = match S::Event::decode(stored.raw()) {
        Ok(Some(event)) => Some(event),
        Ok(None) => {
            bump(&shared.counters.retired_skipped);
            ack(shared, &d.msg).await;
            return None;
        }
        Err(e) => {
            let reason = decide::decode_failure_reason(&e);
            {
                dead_letter(shared, &d, reason, &e.to_string(), d.delivered).await;
                return None;
            }
        }
    };
    let id = stored.id.to_string();
    if let Some(done) = &shared.done {
        if d.verify && done.contains(&stored.id) {
            tracing::debug!(event_id = %id, "skipping an event completed before");
            bump(&shared.counters.duplicates_skipped);
            {
                ack(shared, &d.msg).await;
                return None;
            }
        }
    }
    let mut attempt = d.delivered;
    let mut retry = 0;
    loop {
        let current = match event.take() {
            Some(event) => event,
            // Decoded once already, so decoding again gives the same result.
            None => match S::Event::decode(stored.raw()) {
                Ok(Some(event)) => event,
                _ => {
                    let reason = "the event no longer decodes";
                    {
                        dead_letter(shared, &d, DeadLetterReason::Undecodable, reason, attempt)
                            .await;
                        return None;
                    }
                }
            },
        };
        let ctx = decide::event_context(&stored, attempt, redriven);
        let span = decide::handler_span(&shared.config.durable_name, &stored, attempt);
        let started = std::time::Instant::now();
        let call = shared.subscriber.handle(current, &ctx).instrument(span);
        let call = observability::with_cause(&stored.correlation_id, stored.id, call);
        let handled = decide::catch_panic(call).await;
        shared
            .metrics
            .handler_seconds
            .record(started.elapsed().as_secs_f64());
        let error = match handled {
            Ok(()) => {
                bump(&shared.counters.handled);
                shared.metrics.handled.increment(1);
                if shared.done.is_some() {
                    return Some((stored.id, d.msg));
                }
                ack(shared, &d.msg).await;
                return None;
            }
            Err(error) => error,
        };
        match decide::after_failure(&shared.config, &error, attempt, retry) {
            AfterFailure::DeadLetter { reason, error } => {
                dead_letter(shared, &d, reason, &error, attempt).await;
                return None;
            }
            AfterFailure::RetryAfter(delay) => {
                // The log names the cause alone, without the "retryable failure: " of
                // `HandlerError`'s display.
                let (HandlerError::Retryable(e) | HandlerError::Permanent(e)) = &error;
                tracing::warn!(event_id = %id, attempt, ?delay, error = %e, "handler failed; retrying");
                bump(&shared.counters.retries);
                shared.metrics.retried.increment(1);
                retry += 1;
                attempt += 1;
                if !pause(shared, delay).await {
                    {
                        nak(&d.msg).await;
                        return None;
                    }
                }
            }
        }
    }
}

async fn dead_letter<S: Subscriber>(
    shared: &Shared<S>,
    d: &Delivery,
    reason: DeadLetterReason,
    error: &str,
    deliveries: u64,
) {
    let (original_subject, position) = d
        .origin
        .clone()
        .unwrap_or_else(|| (d.msg.subject.as_str().to_owned(), 0));
    let draft = DeadLetterDraft {
        event_stream: &shared.stream,
        durable: &shared.config.durable_name,
        reason,
        error,
        original_subject: &original_subject,
        position,
        deliveries,
        dedupe: match d.source {
            Source::Events => format!("m:{position}:{}", d.delivered),
            Source::Redrive => format!("r:{}:{}", d.seq, d.delivered),
        },
    };
    let headers = dead_letter::dead_letter_headers(d.msg.headers.as_ref(), &draft);
    loop {
        match dead_letter::publish(&shared.js, headers.clone(), d.msg.payload.clone(), &draft).await
        {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot store a dead letter; retrying");
                if !pause(shared, Duration::from_secs(1)).await {
                    return nak(&d.msg).await;
                }
            }
        }
    }
    tracing::warn!(
        subject = %original_subject,
        position,
        %reason,
        error,
        "event dead-lettered"
    );
    bump(&shared.counters.dead_lettered);
    shared.metrics.dead_lettered(reason.as_str());
    if let Err(e) = d.msg.ack_with(AckKind::Term).await {
        tracing::warn!(error = %e, "term failed; the redelivery will be dead-lettered again");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::subscriber::SubscriberConfig;

    #[test]
    fn backoff_repeats_the_last_delay() {
        let config = SubscriberConfig::new("x")
            .backoff([Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(config.delay(0), Duration::from_millis(10));
        assert_eq!(config.delay(1), Duration::from_millis(20));
        assert_eq!(config.delay(7), Duration::from_millis(20));
    }
}
