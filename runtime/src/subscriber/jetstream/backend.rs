//! How the per-event loop settles a JetStream message: acks (after the completion log stored
//! the completion, when idempotency is on), naks, and dead letters published before the `term`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::HeaderMap;
use tokio::sync::watch;
use uuid::Uuid;

use super::acks::{ack, nak};
use super::dead_letters::{self, DeadLetterDraft};
use super::delivery::{Completion, Delivery, Shared, Source};
use crate::error::ErrorChain;
use crate::observability::SubscriberMetrics;
use crate::store::jetstream::headers;
use crate::store::StoredEvent;
use crate::subscriber::config::SubscriberConfig;
use crate::subscriber::handle::Counters;
use crate::subscriber::handler::Subscriber;
use crate::subscriber::process::{pause, Backend, Letter, Settled};

impl<S: Subscriber> Backend for Shared<S> {
    type Subscriber = S;
    type Delivery = Delivery;

    fn subscriber(&self) -> &S {
        &self.subscriber
    }

    fn config(&self) -> &SubscriberConfig {
        &self.config
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn metrics(&self) -> &SubscriberMetrics {
        &self.metrics
    }

    fn stop(&self) -> &watch::Receiver<bool> {
        &self.shutdown
    }

    fn event(&self, delivery: &Delivery) -> Result<Arc<StoredEvent>, String> {
        decode_stored(self, delivery).map(Arc::new)
    }

    fn first_attempt(&self, delivery: &Delivery) -> u64 {
        // In-place retries of earlier deliveries are not known here; the server's count of
        // deliveries is what survives a crash. A redriven letter has a consumer of its own, so
        // this counts from its redrive.
        delivery.delivered
    }

    fn redriven(&self, delivery: &Delivery) -> Option<u64> {
        (delivery.source == Source::Redrive)
            .then(|| dead_letters::recorded_attempts(delivery.msg.headers.as_ref()))
    }

    fn completed_before(&self, delivery: &Delivery, id: Uuid) -> bool {
        // Only a delivery that may repeat an earlier one is looked up (see `Delivery::verify`).
        match &self.done {
            Some(log) => delivery.verify && log.contains(&id),
            None => false,
        }
    }

    async fn skip(&self, delivery: Delivery) {
        ack(self, &delivery.msg).await;
    }

    async fn complete(&self, delivery: Delivery, id: Uuid) -> Settled {
        let Some(log) = &self.done else {
            ack(self, &delivery.msg).await;
            return Settled::Done;
        };
        let report = delivery.report();
        let completion = Completion {
            msg: delivery.msg,
            report,
        };
        match log.complete(id, completion) {
            Ok(()) => Settled::AwaitingCompletion,
            Err(completion) => {
                tracing::error!("the completion log writer is gone; acking anyway");
                ack(self, &completion.msg).await;
                Settled::Done
            }
        }
    }

    async fn dead_letter(&self, delivery: Delivery, letter: Letter) -> bool {
        publish_dead_letter(self, &delivery, &letter).await
    }

    async fn release(&self, delivery: Delivery) {
        nak(&delivery.msg).await;
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
    headers::decode(rest, *position, msg_headers, d.msg.payload.clone())
        .map_err(|e| ErrorChain(&e).to_string())
}

/// Publishes the dead letter (retrying until the server stores it), then `term`s the message;
/// false when shutdown began first, and the message was `nak`ed instead.
async fn publish_dead_letter<S: Subscriber>(
    shared: &Shared<S>,
    d: &Delivery,
    letter: &Letter,
) -> bool {
    let (original_subject, position) = d
        .origin
        .clone()
        .unwrap_or_else(|| (d.msg.subject.as_str().to_owned(), 0));
    let draft = DeadLetterDraft {
        event_stream: &shared.stream,
        durable: &shared.config.durable_name,
        reason: letter.reason,
        error: &letter.error,
        original_subject: &original_subject,
        position,
        deliveries: letter.attempts,
        dedupe: match d.source {
            Source::Events => format!("m:{position}:{}", d.delivered),
            Source::Redrive => format!("r:{}:{}", d.seq, d.delivered),
        },
    };
    let headers = dead_letters::dead_letter_headers(d.msg.headers.as_ref(), &draft);
    loop {
        let payload = d.msg.payload.clone();
        match dead_letters::publish(&shared.js, headers.clone(), payload, &draft).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot store a dead letter; retrying");
                if !pause(&shared.shutdown, Duration::from_secs(1)).await {
                    nak(&d.msg).await;
                    return false;
                }
            }
        }
    }
    tracing::warn!(
        subject = %original_subject,
        position,
        reason = %letter.reason,
        error = letter.error,
        "event dead-lettered"
    );
    if let Err(e) = d.msg.ack_with(AckKind::Term).await {
        tracing::warn!(error = %e, "term failed; the redelivery will be dead-lettered again");
    }
    true
}
