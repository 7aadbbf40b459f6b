//! `jetsource events`: one aggregate's history, read and decoded by the runtime's store, from a
//! JetStream stream or a PostgreSQL event store, and printed the same way.

use std::io::Write;

use jetsource::{AggregateKey, EventStore, StoredEvent};

use super::{key, stream_args, Session};
use crate::args::EventsArgs;
use crate::database::Database;
use crate::error::CliError;
use crate::protobuf::ProtobufTypes;
use crate::render::EventView;
use crate::store::open_existing;

/// Prints the aggregate's events in the stream `--stream` from `--from-version` on, oldest
/// first; Protobuf payloads decoded with `types` when given.
pub async fn run(
    session: &Session,
    args: &EventsArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let key = key(&args.aggregate)?;
    let stream = stream_args(&args.aggregate);
    let store = open_existing(session.client.clone(), &stream, session.request_timeout).await?;
    let events = load(&store, &key, args.from_version).await?;
    print(
        &format!("stream {}", store.config().name),
        &key,
        &events,
        types,
        out,
    )
}

/// As [`run`], from the PostgreSQL event store `database`.
pub async fn from_database(
    database: &Database,
    args: &EventsArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let key = key(&args.aggregate)?;
    let events = load(&database.store, &key, args.from_version).await?;
    print(&database.place(), &key, &events, types, out)
}

async fn load(
    store: &impl EventStore,
    key: &AggregateKey,
    from_version: u64,
) -> Result<Vec<StoredEvent>, CliError> {
    store
        .load(key, from_version)
        .await
        .map_err(|e| CliError::request(format!("loading {key}"), &e))
}

/// The history of `key` read from `place` (`stream BANK`, `PostgreSQL schema public`): a count,
/// then each event's headline and details.
fn print(
    place: &str,
    key: &AggregateKey,
    events: &[StoredEvent],
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match events.len() {
        0 => writeln!(out, "no events for {key} in {place}")?,
        1 => writeln!(out, "{key} in {place}: 1 event")?,
        n => writeln!(out, "{key} in {place}: {n} events")?,
    }
    for event in events {
        let view = EventView::stored(event);
        writeln!(out, "\n{}", view.headline())?;
        writeln!(out, "{}", view.details(types))?;
    }
    Ok(())
}
