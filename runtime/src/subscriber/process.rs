//! The per-event loop of every subscriber backend: decode the event, skip it when its type is
//! retired or it was completed before, call the handler (catching panics, recording metrics),
//! and after a failure retry in place or give up to the dead letters.
//!
//! A redriven dead letter is an operator's explicit "try again": it gets a new round of up to
//! `max_deliver` attempts (at least one, however many it had), numbered on from the attempts
//! its letter recorded, and if it fails again its new letter records the total.
//!
//! A backend supplies the event and settles its delivery through [`Backend`]; everything the
//! loop decides is decided here, once, so the backends cannot drift apart.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::config::SubscriberConfig;
use super::dead_letter::DeadLetterReason;
use super::decide::{self, AfterFailure};
use super::handle::{bump, Counters};
use super::handler::{HandlerError, Subscriber};
use crate::error::{DecodeError, ErrorChain, HumanDuration};
use crate::event_set::EventSet;
use crate::observability::{self, SubscriberMetrics};
use crate::store::StoredEvent;

/// What the loop needs from a subscriber backend: the event a delivery carries, the attempts
/// made on it before, whether it was completed before, and the ways a delivery ends.
pub(crate) trait Backend: Sync {
    type Subscriber: Subscriber;
    /// One delivered event, owned by the loop until it is settled.
    type Delivery: Send;

    fn subscriber(&self) -> &Self::Subscriber;
    fn config(&self) -> &SubscriberConfig;
    fn counters(&self) -> &Counters;
    fn metrics(&self) -> &SubscriberMetrics;
    /// Turns `true` when shutdown begins: retry pauses end, and nothing new starts.
    fn stop(&self) -> &watch::Receiver<bool>;

    /// The stored event the delivery carries, or why it carries none (dead-lettered as
    /// [`DeadLetterReason::Corrupt`]).
    fn event(&self, delivery: &Self::Delivery) -> Result<Arc<StoredEvent>, String>;
    /// The number of the delivery's first handler attempt (from 1) since the event was
    /// delivered or redriven: attempts made before, in earlier deliveries, count towards
    /// `max_deliver`.
    fn first_attempt(&self, delivery: &Self::Delivery) -> u64;
    /// For a dead letter handed back, the handler attempts its letter recorded; `None` for
    /// any other delivery.
    fn redriven(&self, delivery: &Self::Delivery) -> Option<u64>;
    /// Whether the completion log has the event: false when idempotency is off, or when the
    /// delivery cannot be one the subscriber saw before.
    fn completed_before(&self, delivery: &Self::Delivery, id: Uuid) -> bool;
    /// Called before every handler attempt, for backends that count attempts themselves.
    fn attempt_started(&self, _delivery: &Self::Delivery) {}

    /// Acknowledges a delivery the handler must not see (its type is retired, or it was
    /// completed before).
    fn skip(&self, delivery: Self::Delivery) -> impl Future<Output = ()> + Send;
    /// Acknowledges a handled delivery, recording its completion when idempotency is on.
    fn complete(&self, delivery: Self::Delivery, id: Uuid) -> impl Future<Output = Settled> + Send;
    /// Stores the dead letter and acknowledges the delivery; false when shutdown interrupted
    /// it and the delivery was released instead.
    fn dead_letter(
        &self,
        delivery: Self::Delivery,
        letter: Letter,
    ) -> impl Future<Output = bool> + Send;
    /// Leaves the delivery unacknowledged, to come back first in a later run.
    fn release(&self, delivery: Self::Delivery) -> impl Future<Output = ()> + Send;
}

/// Whether a delivery is over when [`process`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Acknowledged, skipped, dead-lettered or released.
    Done,
    /// Handled; its acknowledgement waits for the completion log to store the completion,
    /// and the backend reports it then.
    // Only the JetStream backend defers acks; the in-memory one records both in one step.
    #[cfg_attr(not(feature = "jetstream"), allow(dead_code))]
    AwaitingCompletion,
}

/// What a dead letter records besides the event.
#[derive(Debug)]
pub(crate) struct Letter {
    pub(crate) reason: DeadLetterReason,
    /// The error with its causes, `a: b: c` ([`ErrorChain`]).
    pub(crate) error: String,
    /// Handler attempts made, at least 1 (also when the event never decoded), including those
    /// before a redrive.
    pub(crate) attempts: u64,
}

/// Takes one delivery to the end: acknowledged, skipped, dead-lettered, handed to the
/// completion log, or (when shutdown interrupts it) left unacknowledged for a later run.
pub(crate) async fn process<B: Backend>(backend: &B, delivery: B::Delivery) -> Settled {
    if stopping(backend.stop()) {
        // Arrived as the shutdown began: not handled now, delivered first by the next run.
        backend.release(delivery).await;
        return Settled::Done;
    }
    let redriven = backend.redriven(&delivery);
    let earlier = redriven.unwrap_or(0);
    let first = earlier + backend.first_attempt(&delivery);
    let stored = match backend.event(&delivery) {
        Ok(stored) => stored,
        Err(error) => {
            let reason = DeadLetterReason::Corrupt;
            return give_up(backend, delivery, reason, error, first).await;
        }
    };
    let counters = backend.counters();
    let mut decoded = match decode::<B>(&stored) {
        Ok(Some(event)) => Some(event),
        Ok(None) => {
            bump(&counters.retired_skipped);
            backend.skip(delivery).await;
            return Settled::Done;
        }
        Err(e) => {
            let reason = decide::decode_failure_reason(&e);
            let error = ErrorChain(&e).to_string();
            return give_up(backend, delivery, reason, error, first).await;
        }
    };
    if backend.completed_before(&delivery, stored.id) {
        tracing::debug!(event_id = %stored.id, "skipping an event completed before");
        bump(&counters.duplicates_skipped);
        backend.skip(delivery).await;
        return Settled::Done;
    }
    let config = backend.config();
    let metrics = backend.metrics();
    let mut attempt = first;
    let mut retries = 0;
    loop {
        let event = match decoded.take() {
            Some(event) => event,
            // Decoded once already, so decoding again for a retry gives the same result.
            None => match decode::<B>(&stored) {
                Ok(Some(event)) => event,
                _ => {
                    let (reason, error) =
                        (DeadLetterReason::Undecodable, "the event no longer decodes");
                    return give_up(backend, delivery, reason, error.to_owned(), attempt).await;
                }
            },
        };
        backend.attempt_started(&delivery);
        let ctx = decide::event_context(&stored, attempt, redriven.is_some());
        let span = decide::handler_span(&config.durable_name, &stored, attempt);
        let started = Instant::now();
        // Commands the handler runs inherit the event's correlation id, and the event as cause.
        let call = backend.subscriber().handle(event, &ctx).instrument(span);
        let call = observability::with_cause(&stored.correlation_id, stored.id, call);
        let handled = decide::catch_panic(call).await;
        metrics
            .handler_seconds
            .record(started.elapsed().as_secs_f64());
        let error = match handled {
            Ok(()) => {
                bump(&counters.handled);
                metrics.handled.increment(1);
                return backend.complete(delivery, stored.id).await;
            }
            Err(error) => error,
        };
        match decide::after_failure(config, &error, attempt, earlier, retries) {
            AfterFailure::DeadLetter { reason, error } => {
                return give_up(backend, delivery, reason, error, attempt).await;
            }
            AfterFailure::RetryAfter(delay) => {
                // The log names the cause and its sources: "handler failed" already says what
                // the "retryable failure" of `HandlerError`'s display would.
                let (HandlerError::Retryable(cause) | HandlerError::Permanent(cause)) = &error;
                tracing::warn!(
                    event_id = %stored.id,
                    attempt,
                    delay = %HumanDuration(delay),
                    error = %ErrorChain(&**cause),
                    "handler failed; retrying"
                );
                bump(&counters.retries);
                metrics.retried.increment(1);
                retries += 1;
                attempt += 1;
                if !pause(backend.stop(), delay).await {
                    backend.release(delivery).await;
                    return Settled::Done;
                }
            }
        }
    }
}

fn decode<B: Backend>(
    stored: &StoredEvent,
) -> Result<Option<<B::Subscriber as Subscriber>::Event>, DecodeError> {
    <<B::Subscriber as Subscriber>::Event as EventSet>::decode(stored.raw())
}

async fn give_up<B: Backend>(
    backend: &B,
    delivery: B::Delivery,
    reason: DeadLetterReason,
    error: String,
    attempts: u64,
) -> Settled {
    let letter = Letter {
        reason,
        error,
        attempts,
    };
    if backend.dead_letter(delivery, letter).await {
        bump(&backend.counters().dead_lettered);
        backend.metrics().dead_lettered(reason.as_str());
    }
    Settled::Done
}

/// Whether shutdown began.
pub(crate) fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Returns once shutdown is requested. A dropped sender requests nothing: a subscriber whose
/// handle was dropped keeps running, as the handle's documentation says.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `delay`; false when shutdown began meanwhile.
pub(crate) async fn pause(stop: &watch::Receiver<bool>, delay: Duration) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => !stopping(&stop),
        () = stopped(&mut stop) => false,
    }
}
