//! `jetsource events`: one aggregate's history, read and decoded by the runtime's store.

use std::io::Write;

use jetsource::{AggregateId, AggregateKey, Codec, EventStore, StoredEvent};

use super::Session;
use crate::args::EventsArgs;
use crate::error::CliError;
use crate::protobuf::ProtobufTypes;
use crate::render;
use crate::store::open_existing;

/// Prints the aggregate's events from `--from-version` on, oldest first; Protobuf payloads
/// decoded with `types` when given.
pub async fn run(
    session: &Session,
    args: &EventsArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    // The type is checked with the id's rules: both are one subject token.
    AggregateId::new(args.aggregate_type.as_str()).map_err(|e| CliError::InvalidAggregate {
        what: "type",
        reason: e.to_string(),
    })?;
    let id =
        AggregateId::new(args.aggregate_id.as_str()).map_err(|e| CliError::InvalidAggregate {
            what: "id",
            reason: e.to_string(),
        })?;
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
        .map_err(|e| CliError::request(format!("loading {key}"), e))?;
    let stream = &store.config().name;
    match events.len() {
        0 => writeln!(out, "no events for {key} in stream {stream}")?,
        1 => writeln!(out, "{key} in stream {stream}: 1 event")?,
        n => writeln!(out, "{key} in stream {stream}: {n} events")?,
    }
    for event in &events {
        print_event(event, types, out)?;
    }
    Ok(())
}

/// One event: its version, name and schema version, metadata, user headers and payload.
fn print_event(
    event: &StoredEvent,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    writeln!(
        out,
        "\nversion {}: {} v{}",
        event.sequence, event.name, event.version
    )?;
    writeln!(out, "  event id:     {}", event.id)?;
    writeln!(out, "  position:     {}", event.position)?;
    writeln!(out, "  timestamp:    {}", render::time(event.timestamp))?;
    writeln!(out, "  correlation:  {}", event.correlation_id)?;
    if let Some(causation) = &event.causation_id {
        writeln!(out, "  causation:    {causation}")?;
    }
    if let Some(command) = &event.command_id {
        writeln!(out, "  command id:   {command}")?;
    }
    for (name, value) in &event.headers {
        writeln!(out, "  header {name}: {value}")?;
    }
    let payload = match event.codec {
        Codec::Protobuf => render::protobuf_payload(
            types.map(|types| types.decode(&event.name, Some(event.version), &event.payload)),
            &event.payload,
            "  ",
        ),
        codec => render::payload(Some(codec), &event.payload, "  "),
    };
    writeln!(out, "{payload}")?;
    Ok(())
}
