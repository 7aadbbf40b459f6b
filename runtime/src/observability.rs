//! Tracing spans, metrics and trace propagation.
//!
//! # Spans
//! Every operation runs in a [`tracing`] span, so any subscriber (fmt, OpenTelemetry, ...) sees
//! it with its fields:
//!
//! | span | level | fields |
//! |---|---|---|
//! | `jetsource.execute` | info | `aggregate_type`, `aggregate_id`, `attempts`, `version`, `appended` |
//! | `jetsource.append` | debug | `aggregate_type`, `aggregate_id`, `events`, `first_event`, `expected`, `version`, `position` |
//! | `jetsource.load` | debug | `aggregate_type`, `aggregate_id`, `from`, `events` |
//! | `jetsource.handle` | info | `subscriber`, `event_id`, `event`, `aggregate_type`, `aggregate_id`, `version`, `position`, `attempt` |
//!
//! # Metrics
//! Through the [`metrics`] facade: jetsource installs no recorder, so they cost next to nothing
//! until the application installs one (Prometheus, StatsD, ...).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`EVENTS_APPENDED`] | counter | `aggregate_type` |
//! | [`EVENTS_HANDLED`] | counter | `subscriber` |
//! | [`EVENTS_RETRIED`] | counter | `subscriber` |
//! | [`EVENTS_DEAD_LETTERED`] | counter | `subscriber`, `reason` |
//! | [`HANDLER_SECONDS`] | histogram | `subscriber` |
//! | [`CONSUMER_LAG`] | gauge | `subscriber`, `consumer` (events not yet delivered to it; one consumer per partition when scaled out) |
//!
//! # Correlation and causation
//! While a subscriber's handler runs, the event it handles is the current cause: a command
//! executed by the handler (through [`Repository`](crate::Repository)) or an event published by
#![cfg_attr(
    feature = "jetstream",
    doc = "it ([`Publisher`](crate::Publisher)) without an explicit correlation id takes the handled"
)]
#![cfg_attr(
    not(feature = "jetstream"),
    doc = "it (`Publisher`, feature `jetstream`) without an explicit correlation id takes the handled"
)]
//! event's correlation id, and without an explicit causation id takes the handled event's id.
//! This follows the handler's task; work it spawns onto other tasks passes the ids explicitly.
//!
//! # OpenTelemetry (feature `opentelemetry`)
//! Appends and publishes inject the current span's W3C `traceparent` (unless the command's
//! headers carry one), and each handler span takes the stored `traceparent` as its parent, so a
//! trace runs from the request that appended an event to every handler of it. Use it with
//! `tracing-opentelemetry`'s layer and a W3C trace-context propagation setup.
//!
//! ```
//! assert_eq!(jetsource::observability::EVENTS_APPENDED, "jetsource_events_appended_total");
//! ```

use std::collections::BTreeMap;
use std::future::Future;

use uuid::Uuid;

/// Counter: events stored by appends and publishes.
pub const EVENTS_APPENDED: &str = "jetsource_events_appended_total";
/// Counter: events a subscriber's handler completed.
pub const EVENTS_HANDLED: &str = "jetsource_events_handled_total";
/// Counter: in-place retries after retryable handler failures.
pub const EVENTS_RETRIED: &str = "jetsource_events_retried_total";
/// Counter: events moved to the dead-letter stream.
pub const EVENTS_DEAD_LETTERED: &str = "jetsource_events_dead_lettered_total";
/// Histogram: seconds one handler call took.
pub const HANDLER_SECONDS: &str = "jetsource_handler_seconds";
/// Gauge: events of a subscriber's stream not yet delivered to it.
pub const CONSUMER_LAG: &str = "jetsource_consumer_lag";
/// Counter: process-manager instances created, by `process_manager`. Active instances are
/// this minus [`INSTANCES_COMPLETED`].
pub const INSTANCES_STARTED: &str = "jetsource_process_instances_started_total";
/// Counter: process-manager instances completed, by `process_manager`.
pub const INSTANCES_COMPLETED: &str = "jetsource_process_instances_completed_total";
/// Counter: deadlines scheduled (a re-scheduled one counts again), by `process_manager`.
/// Pending deadlines are this minus [`DEADLINES_CANCELLED`] and [`DEADLINES_FIRED`].
pub const DEADLINES_SCHEDULED: &str = "jetsource_deadlines_scheduled_total";
/// Counter: deadlines cancelled (also by completing an instance), by `process_manager`.
pub const DEADLINES_CANCELLED: &str = "jetsource_deadlines_cancelled_total";
/// Counter: deadlines handled when they fired, by `process_manager`.
pub const DEADLINES_FIRED: &str = "jetsource_deadlines_fired_total";
/// Histogram: seconds from a deadline's due time to its handler, by `process_manager`.
pub const DEADLINE_LATENESS_SECONDS: &str = "jetsource_deadline_lateness_seconds";
/// Counter: commands a process manager sent, by `process_manager` and `outcome` (`applied`
/// or `rejected`).
pub const PROCESS_COMMANDS: &str = "jetsource_process_commands_total";

/// The event a handler is handling, for the commands it runs.
#[derive(Debug, Clone)]
struct Cause {
    correlation_id: String,
    event_id: Uuid,
}

tokio::task_local! {
    static HANDLING: Cause;
}

/// Runs `work` (a handler call) with the handled event as the current cause.
pub(crate) async fn with_cause<F: Future>(
    correlation_id: &str,
    event_id: Uuid,
    work: F,
) -> F::Output {
    let cause = Cause {
        correlation_id: correlation_id.to_owned(),
        event_id,
    };
    HANDLING.scope(cause, work).await
}

/// The correlation id to use when none was given: the handled event's, if a handler is running.
pub(crate) fn inherited_correlation() -> Option<String> {
    HANDLING.try_with(|cause| cause.correlation_id.clone()).ok()
}

/// The causation id to use when none was given: the handled event's id, if a handler is running.
pub(crate) fn inherited_causation() -> Option<String> {
    HANDLING.try_with(|cause| cause.event_id.to_string()).ok()
}

/// Adds the current span's `traceparent` to the headers of outgoing events (feature
/// `opentelemetry`; a no-op otherwise, and when the headers carry one already).
pub(crate) fn inject_trace(headers: &mut BTreeMap<String, String>) {
    #[cfg(feature = "opentelemetry")]
    otel::inject(headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = headers;
}

/// Makes the stored `traceparent` in `headers` the parent of `span` (feature `opentelemetry`).
pub(crate) fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    #[cfg(feature = "opentelemetry")]
    otel::set_parent(span, headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::collections::BTreeMap;

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    const TRACEPARENT: &str = "traceparent";

    struct Headers<'a>(&'a mut BTreeMap<String, String>);

    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_owned(), value);
        }
    }

    struct Stored<'a>(&'a BTreeMap<String, String>);

    impl Extractor for Stored<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    pub(super) fn inject(headers: &mut BTreeMap<String, String>) {
        if headers.keys().any(|k| k.eq_ignore_ascii_case(TRACEPARENT)) {
            return;
        }
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut Headers(headers));
    }

    pub(super) fn set_parent(span: &tracing::Span, headers: &BTreeMap<String, String>) {
        if !headers.contains_key(TRACEPARENT) {
            return;
        }
        let parent = TraceContextPropagator::new().extract(&Stored(headers));
        let _ = span.set_parent(parent);
    }
}

/// A subscriber's metric handles, registered once so the per-event cost is an atomic add.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberMetrics {
    subscriber: String,
    pub(crate) handled: metrics::Counter,
    pub(crate) retried: metrics::Counter,
    pub(crate) handler_seconds: metrics::Histogram,
    pub(crate) lag: metrics::Gauge,
}

impl SubscriberMetrics {
    /// The metrics of `subscriber` reading through `consumer` (the durable consumer; one per
    /// partition when scaled out, so each partition's lag is a gauge of its own).
    pub(crate) fn new(subscriber: &str, consumer: &str) -> Self {
        let label = || ("subscriber", subscriber.to_owned());
        SubscriberMetrics {
            subscriber: subscriber.to_owned(),
            handled: metrics::counter!(EVENTS_HANDLED, &[label()]),
            retried: metrics::counter!(EVENTS_RETRIED, &[label()]),
            handler_seconds: metrics::histogram!(HANDLER_SECONDS, &[label()]),
            lag: metrics::gauge!(CONSUMER_LAG, &[label(), ("consumer", consumer.to_owned())]),
        }
    }

    /// Dead letters are rare: their counter is looked up per reason when one happens.
    pub(crate) fn dead_lettered(&self, reason: &str) {
        metrics::counter!(
            EVENTS_DEAD_LETTERED,
            "subscriber" => self.subscriber.clone(),
            "reason" => reason.to_owned()
        )
        .increment(1);
    }
}
