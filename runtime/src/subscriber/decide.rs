//! What every subscriber backend decides about one event the same way, wherever the event came
//! from: the context its handler gets, which dead-letter reason a decoding failure is, how a
//! panicking handler counts, and what a handler failure leads to.
//!
//! The per-event loop (`process.rs`) uses all of it, for every backend.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use super::config::SubscriberConfig;
use super::dead_letter::DeadLetterReason;
use super::handler::{EventContext, HandlerError};
use crate::error::{DecodeError, ErrorChain};
use crate::store::StoredEvent;

/// The span of one handler attempt (see [`crate::observability`]), continuing the trace the
/// event carries.
pub(crate) fn handler_span(subscriber: &str, stored: &StoredEvent, attempt: u64) -> tracing::Span {
    let span = tracing::info_span!(
        "jetsource.handle",
        subscriber = %subscriber,
        event_id = %stored.id,
        event = %stored.name,
        aggregate_type = %stored.aggregate_type,
        aggregate_id = %stored.aggregate_id,
        version = stored.sequence,
        position = stored.position,
        attempt
    );
    crate::observability::continue_trace(&span, &stored.headers);
    span
}

/// The context a handler gets for `stored`, on handler attempt `attempt` (from 1).
pub(crate) fn event_context(stored: &StoredEvent, attempt: u64, redriven: bool) -> EventContext {
    EventContext {
        event_id: stored.id,
        event_name: stored.name.clone(),
        event_version: stored.version,
        aggregate_type: stored.aggregate_type.clone(),
        aggregate_id: stored.aggregate_id.clone(),
        sequence: stored.sequence,
        position: stored.position,
        timestamp: stored.timestamp,
        correlation_id: stored.correlation_id.clone(),
        causation_id: stored.causation_id.clone(),
        command_id: stored.command_id.clone(),
        headers: stored.headers.clone(),
        delivery_count: attempt,
        redriven,
    }
}

/// The dead-letter reason of an event that does not decode into the handled set.
pub(crate) fn decode_failure_reason(error: &DecodeError) -> DeadLetterReason {
    match error {
        DecodeError::UnknownEvent { .. } => DeadLetterReason::UnknownEvent,
        DecodeError::FutureVersion { .. } => DeadLetterReason::FutureVersion,
        _ => DeadLetterReason::Undecodable,
    }
}

/// Awaits one handler call. A panic becomes a [`HandlerError::Permanent`] naming it:
/// retrying the same code on the same event would panic again, and the subscriber must keep
/// running.
pub(crate) async fn catch_panic(
    call: impl Future<Output = Result<(), HandlerError>>,
) -> Result<(), HandlerError> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(HandlerError::permanent(format!("handler panicked: {what}")))
        })
}

/// What follows a failed handler attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Try the same event again after `delay`, holding its aggregate's later events back.
    RetryAfter(Duration),
    /// Give up: dead-letter the event with this reason and error text (the handler's error with
    /// its causes).
    DeadLetter {
        reason: DeadLetterReason,
        error: String,
    },
}

/// Decides what follows `error` on handler attempt `attempt` (from 1, counting the `earlier`
/// attempts a redriven event's letter recorded), `retries_so_far` in-place retries after this
/// event's delivery. `max_deliver` limits the attempts since the delivery or redrive, so a
/// redrive always gets a round of its own.
pub(crate) fn after_failure(
    config: &SubscriberConfig,
    error: &HandlerError,
    attempt: u64,
    earlier: u64,
    retries_so_far: usize,
) -> AfterFailure {
    match error {
        HandlerError::Permanent(e) => AfterFailure::DeadLetter {
            reason: DeadLetterReason::Permanent,
            error: ErrorChain(&**e).to_string(),
        },
        HandlerError::Retryable(e)
            if attempt.saturating_sub(earlier) >= u64::from(config.max_deliver) =>
        {
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::MaxDeliver,
                error: format!("{} (after {attempt} attempts)", ErrorChain(&**e)),
            }
        }
        HandlerError::Retryable(_) => AfterFailure::RetryAfter(config.delay(retries_so_far)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SubscriberConfig {
        SubscriberConfig::new("decide")
            .max_deliver(3)
            .backoff([Duration::from_millis(10), Duration::from_millis(20)])
    }

    #[test]
    fn a_permanent_failure_is_dead_lettered_on_the_first_attempt() {
        let decided = after_failure(&config(), &HandlerError::permanent("bad data"), 1, 0, 0);
        assert_eq!(
            decided,
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::Permanent,
                error: "bad data".into()
            }
        );
    }

    #[test]
    fn a_dead_letter_records_the_whole_chain_of_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot save the invoice")]
        struct Save(#[source] std::io::Error);
        let failed = HandlerError::permanent(Save(std::io::Error::other("disk full")));
        assert_eq!(
            after_failure(&config(), &failed, 1, 0, 0),
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::Permanent,
                error: "cannot save the invoice: disk full".into()
            }
        );
        let failed = HandlerError::retryable(Save(std::io::Error::other("disk full")));
        assert_eq!(
            after_failure(&config(), &failed, 3, 0, 2),
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::MaxDeliver,
                error: "cannot save the invoice: disk full (after 3 attempts)".into()
            }
        );
    }

    #[test]
    fn retryable_failures_back_off_until_max_deliver_then_dead_letter() {
        let down = HandlerError::retryable("db down");
        assert_eq!(
            after_failure(&config(), &down, 1, 0, 0),
            AfterFailure::RetryAfter(Duration::from_millis(10))
        );
        assert_eq!(
            after_failure(&config(), &down, 2, 0, 1),
            AfterFailure::RetryAfter(Duration::from_millis(20))
        );
        assert_eq!(
            after_failure(&config(), &down, 3, 0, 2),
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::MaxDeliver,
                error: "db down (after 3 attempts)".into()
            }
        );
    }

    #[test]
    fn a_redriven_event_gets_a_round_of_max_deliver_attempts_counted_on_from_its_letter() {
        let down = HandlerError::retryable("db down");
        // Its letter recorded 3 attempts (max_deliver already reached): attempts 4 and 5 are
        // retried, 6 gives up with the total.
        assert_eq!(
            after_failure(&config(), &down, 4, 3, 0),
            AfterFailure::RetryAfter(Duration::from_millis(10))
        );
        assert_eq!(
            after_failure(&config(), &down, 5, 3, 1),
            AfterFailure::RetryAfter(Duration::from_millis(20))
        );
        assert_eq!(
            after_failure(&config(), &down, 6, 3, 2),
            AfterFailure::DeadLetter {
                reason: DeadLetterReason::MaxDeliver,
                error: "db down (after 6 attempts)".into()
            }
        );
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_permanently_naming_the_panic() {
        let failed = catch_panic(async { panic!("bug on 99") })
            .await
            .unwrap_err();
        assert!(!failed.is_retryable());
        assert_eq!(
            ErrorChain(&failed).to_string(),
            "permanent failure: handler panicked: bug on 99"
        );
        assert!(catch_panic(async { Ok(()) }).await.is_ok());
    }

    #[test]
    fn decode_failures_map_to_their_dead_letter_reasons() {
        let unknown = DecodeError::UnknownEvent {
            name: "x".into(),
            version: 1,
        };
        let future = DecodeError::FutureVersion {
            name: "x".into(),
            version: 9,
            latest: 1,
        };
        let old = DecodeError::UnknownVersion {
            name: "x".into(),
            version: 0,
        };
        assert_eq!(
            decode_failure_reason(&unknown),
            DeadLetterReason::UnknownEvent
        );
        assert_eq!(
            decode_failure_reason(&future),
            DeadLetterReason::FutureVersion
        );
        assert_eq!(decode_failure_reason(&old), DeadLetterReason::Undecodable);
    }
}
