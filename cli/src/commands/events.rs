//! `jetsource events`: one aggregate's history, read and decoded by the runtime's store.

use std::io::Write;

use jetsource::{AggregateKey, EventStore};

use super::Session;
use crate::args::EventsArgs;
use crate::error::{check_aggregate, CliError};
use crate::protobuf::ProtobufTypes;
use crate::render::EventView;
use crate::store::open_existing;

/// Prints the aggregate's events from `--from-version` on, oldest first; Protobuf payloads
/// decoded with `types` when given.
pub async fn run(
    session: &Session,
    args: &EventsArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    // Checked before connecting too (`check_arguments`); here the id is made.
    let id = check_aggregate("id", &args.aggregate_id)?;
    let store = open_existing(
        session.client.clone(),
        &args.stream,
        session.request_timeout,
    )
    .await?;
    // `AggregateKey` takes the type as `&'static str` (in code it is a compile-time name).
    // This process loads one aggregate and exits, so leaking this one string costs nothing.
    let aggregate_type: &'static str = Box::leak(args.aggregate_type.clone().into_boxed_str());
    let key = AggregateKey::new(aggregate_type, id);
    let events = store
        .load(&key, args.from_version)
        .await
        .map_err(|e| CliError::request(format!("loading {key}"), &e))?;
    let stream = &store.config().name;
    match events.len() {
        0 => writeln!(out, "no events for {key} in stream {stream}")?,
        1 => writeln!(out, "{key} in stream {stream}: 1 event")?,
        n => writeln!(out, "{key} in stream {stream}: {n} events")?,
    }
    for event in &events {
        let view = EventView::stored(event);
        writeln!(out, "\n{}", view.headline())?;
        writeln!(out, "{}", view.details(types))?;
    }
    Ok(())
}
