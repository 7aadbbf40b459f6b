//! The rules every store applies before it touches its backend, written once: what may be
//! appended, and the span and metric of an append. Backends call these first, so a refusal is
//! the same on every backend (the conformance suite checks each one on all of them).

use std::future::Future;
use std::time::UNIX_EPOCH;

use tracing::Instrument;

use super::{AggregateKey, AppendOutcome, NewEvent, Snapshot, StoreError};
use crate::id::{validate_token, InvalidToken};

/// Why an append or load was refused before anything was stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The aggregate type cannot be one NATS subject token (`AggregateKey`'s fields are
    /// public, so a key can bypass `AggregateId`'s checks).
    #[error("aggregate type {name:?} cannot be a subject token")]
    AggregateType {
        /// The refused type name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidToken,
    },
    /// The aggregate id cannot be one NATS subject token.
    #[error("aggregate id {id:?} cannot be a subject token")]
    AggregateId {
        /// The refused id.
        id: String,
        /// What is wrong with it.
        #[source]
        source: InvalidToken,
    },
    /// The event name cannot be one NATS subject token.
    #[error("event name {name:?} cannot be a subject token")]
    EventName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidToken,
    },
    /// A value that travels in a header contains CR, LF or another control character.
    #[error("{what} {value:?} contains a control character")]
    ControlCharacter {
        /// Which value: `command id`, `correlation id`, `causation id`, `user header "x"`.
        what: String,
        /// The value.
        value: String,
    },
    /// A user header name is not printable ASCII without `:` or spaces.
    #[error("user header name {0:?} is not printable ASCII without `:` or spaces")]
    HeaderName(String),
    /// The event's timestamp cannot be written as Unix time.
    #[error("the timestamp of event {0:?} is before 1970")]
    TimestampBefore1970(&'static str),
    /// The event name starts with [`RESERVED_NAME_PREFIX`], which jetsource keeps for its own
    /// records in an aggregate's history (a quarantine record).
    #[error("event name {0:?} is reserved: names starting with `$` are jetsource's own records")]
    ReservedEventName(String),
}

/// Event names starting with this are jetsource's own records in an aggregate's history, such
/// as a quarantine record (`$quarantine`). A derived event cannot take
/// such a name (derived names are `[A-Za-z0-9_-]+`), and every store refuses to append one
/// that is built by hand ([`InvalidInput::ReservedEventName`]), so replay can never mistake a
/// user event for one of them, nor a subscriber's name filter match one.
pub const RESERVED_NAME_PREFIX: char = '$';

tokio::task_local! {
    /// Set while jetsource itself appends a reserved record; a task-local rather than a
    /// parameter because the record goes through the public `EventStore::append` like any event.
    static RESERVED_NAMES_ALLOWED: ();
}

/// Runs `append` (a store's append of jetsource's own records) with reserved names allowed.
pub(crate) async fn allowing_reserved_names<F: Future>(append: F) -> F::Output {
    RESERVED_NAMES_ALLOWED.scope((), append).await
}

fn control(what: impl Into<String>, value: &str) -> Result<(), InvalidInput> {
    if value.chars().any(char::is_control) {
        return Err(InvalidInput::ControlCharacter {
            what: what.into(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Checks the aggregate key of an append or load.
pub(crate) fn check_key(key: &AggregateKey) -> Result<(), InvalidInput> {
    validate_token(key.aggregate_type).map_err(|source| InvalidInput::AggregateType {
        name: key.aggregate_type.to_owned(),
        source,
    })?;
    validate_token(key.id.as_str()).map_err(|source| InvalidInput::AggregateId {
        id: key.id.as_str().to_owned(),
        source,
    })
}

/// Checks one event's name and metadata.
pub(crate) fn check_event(event: &NewEvent) -> Result<(), InvalidInput> {
    validate_token(event.name).map_err(|source| InvalidInput::EventName {
        name: event.name.to_owned(),
        source,
    })?;
    if event.name.starts_with(RESERVED_NAME_PREFIX)
        && RESERVED_NAMES_ALLOWED.try_with(|_| ()).is_err()
    {
        return Err(InvalidInput::ReservedEventName(event.name.to_owned()));
    }
    control("correlation id", &event.correlation_id)?;
    if let Some(causation) = &event.causation_id {
        control("causation id", causation)?;
    }
    for (name, value) in &event.headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(InvalidInput::HeaderName(name.clone()));
        }
        control(format!("user header {name:?}"), value)?;
    }
    if event.timestamp.duration_since(UNIX_EPOCH).is_err() {
        return Err(InvalidInput::TimestampBefore1970(event.name));
    }
    Ok(())
}

/// Checks a whole append: key, command id and every event. An empty append is checked by the
/// backend, after the command id (a duplicate of an earlier command reports its outcome).
pub(crate) fn check_append(
    key: &AggregateKey,
    command_id: Option<&str>,
    events: &[NewEvent],
) -> Result<(), InvalidInput> {
    check_key(key)?;
    if let Some(command) = command_id {
        control("command id", command)?;
    }
    events.iter().try_for_each(check_event)
}

/// An append as every store runs it: the checks, then `backend` with the checked events inside
/// the `jetsource.append` span, counting what it stored.
pub(crate) async fn append<Fut>(
    key: &AggregateKey,
    expected: super::ExpectedVersion,
    command_id: Option<&str>,
    events: Vec<NewEvent>,
    backend: impl FnOnce(Vec<NewEvent>) -> Fut,
) -> Result<AppendOutcome, StoreError>
where
    Fut: Future<Output = Result<AppendOutcome, StoreError>>,
{
    check_append(key, command_id, &events)?;
    let shape = AppendShape::of(&events);
    traced_append(key, expected, shape, backend(events)).await
}

/// What the append span says about the events, read before the backend takes them.
#[derive(Clone, Copy)]
struct AppendShape {
    count: usize,
    first_event: Option<&'static str>,
}

impl AppendShape {
    fn of(events: &[NewEvent]) -> Self {
        AppendShape {
            count: events.len(),
            first_event: events.first().map(|e| e.name),
        }
    }
}

/// Runs a backend's append inside the `jetsource.append` span and counts what it stored.
async fn traced_append(
    key: &AggregateKey,
    expected: super::ExpectedVersion,
    shape: AppendShape,
    append: impl Future<Output = Result<AppendOutcome, StoreError>>,
) -> Result<AppendOutcome, StoreError> {
    let span = tracing::debug_span!(
        "jetsource.append",
        aggregate_type = key.aggregate_type,
        aggregate_id = %key.id,
        events = shape.count,
        first_event = shape.first_event,
        expected = ?expected,
        version = tracing::field::Empty,
        position = tracing::field::Empty,
    );
    let outcome = append.instrument(span.clone()).await?;
    span.record("version", outcome.last_sequence);
    span.record("position", outcome.last_position);
    if !outcome.duplicate {
        metrics::counter!(
            crate::observability::EVENTS_APPENDED,
            "aggregate_type" => key.aggregate_type
        )
        .increment(shape.count as u64);
    }
    Ok(outcome)
}

/// Whether `new` replaces the stored snapshot `existing`: not when `existing` has the same
/// schema and includes at least as many events.
pub(crate) fn snapshot_replaces(existing: &Snapshot, new: &Snapshot) -> bool {
    existing.schema_version != new.schema_version || existing.version < new.version
}
