//! `jetsource quarantine`: one event of an aggregate left out of its replay from now on,
//! through the runtime's own quarantine, in a JetStream stream or a PostgreSQL event store.

use std::io::Write;

use jetsource::quarantine::{quarantine, Quarantine, QuarantineError, Quarantined};
use jetsource::{AggregateKey, EventStore};

use super::{key, stream_args, Session};
use crate::args::QuarantineArgs;
use crate::database::Database;
use crate::error::CliError;
use crate::render::time;
use crate::store::open_existing;

/// Quarantines the event in the stream `--stream`.
pub async fn run(
    session: &Session,
    args: &QuarantineArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let key = key(&args.aggregate)?;
    let stream = stream_args(&args.aggregate);
    let store = open_existing(session.client.clone(), &stream, session.request_timeout).await?;
    let place = format!("stream {}", store.config().name);
    apply(&store, &place, &key, args, out).await
}

/// As [`run`], in the PostgreSQL event store `database`.
pub async fn from_database(
    database: &Database,
    args: &QuarantineArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let key = key(&args.aggregate)?;
    apply(&database.store, &database.place(), &key, args, out).await
}

async fn apply(
    store: &impl EventStore,
    place: &str,
    key: &AggregateKey,
    args: &QuarantineArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut asked = Quarantine::event(args.sequence, &args.event_name)
        .by(&args.by)
        .because(&args.reason);
    if let Some(id) = args.event_id {
        asked = asked.with_id(id);
    }
    let done = quarantine(store, key, asked)
        .await
        .map_err(|e| refused(e, key, place))?;
    report(&done, key, place, out)
}

fn report(
    done: &Quarantined,
    key: &AggregateKey,
    place: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let record = &done.record;
    let event = format!(
        "event {} of {key} in {place} ({} v{}, id {})",
        record.sequence, record.name, record.version, record.event_id
    );
    if done.appended {
        writeln!(
            out,
            "quarantined {event}: record at version {}, by {}: {}",
            record.record_sequence, record.by, record.reason
        )?;
        writeln!(
            out,
            "replay now leaves the event out; `events` still lists it"
        )?;
    } else {
        writeln!(
            out,
            "{event} was quarantined already, by {} at {} (record at version {}): {}; \
             nothing appended",
            record.by,
            time(record.at),
            record.record_sequence,
            record.reason
        )?;
    }
    Ok(())
}

/// The CLI's error for a refused or failed quarantine; nothing was appended.
fn refused(error: QuarantineError, key: &AggregateKey, place: &str) -> CliError {
    let aggregate = key.to_string();
    let place = place.to_owned();
    // The event at the sequence is another than the one named (`what`: by name or by id).
    let mismatch = |sequence, what, expected, found| CliError::EventMismatch {
        aggregate: aggregate.clone(),
        sequence,
        what,
        expected,
        found,
    };
    match error {
        QuarantineError::NoSuchEvent { version: 0, .. } => {
            CliError::UnknownAggregate { aggregate, place }
        }
        QuarantineError::NoSuchEvent {
            sequence, version, ..
        } => CliError::NoSuchEvent {
            aggregate,
            place,
            sequence,
            version,
        },
        QuarantineError::NameMismatch {
            sequence,
            expected,
            found,
            ..
        } => mismatch(sequence, "is", expected, found),
        QuarantineError::IdMismatch {
            sequence,
            expected,
            found,
            ..
        } => mismatch(sequence, "has id", expected.to_string(), found.to_string()),
        QuarantineError::IsRecord { sequence, .. } => CliError::IsQuarantineRecord {
            aggregate,
            sequence,
        },
        QuarantineError::Incomplete(_) => CliError::Arguments(format!(
            "quarantine needs a non-empty --by and --reason: {error}"
        )),
        other => CliError::request(
            format!("quarantining an event of {aggregate} in {place}"),
            &other,
        ),
    }
}
