//! `jetsource tail`: follow a stream through an ordered consumer that starts at new messages.

use std::io::Write;
use std::time::SystemTime;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;

use super::Session;
use crate::args::TailArgs;
use crate::error::CliError;
use crate::protobuf::ProtobufTypes;
use crate::render;
use crate::store::get_stream;

/// Prints each message stored after the start, until `--count` or an interrupt; Protobuf
/// payloads decoded with `types` when given.
pub async fn run(
    session: &Session,
    args: &TailArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let js = session.jetstream();
    let stream = get_stream(&js, &args.stream).await?;
    let following = format!("following stream {}", args.stream);
    // Ephemeral and unacknowledged: the server drops it 30 s after this process stops.
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: args.subject.clone().unwrap_or_default(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| CliError::request(&following, &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| CliError::request(&following, &e))?;
    // On stderr, so stdout holds only messages; tests and scripts wait for this line.
    eprintln!(
        "{following}{}; new messages only, stop with Ctrl-C",
        args.subject
            .as_deref()
            .map(|s| format!(" on {s}"))
            .unwrap_or_default()
    );
    let mut printed = 0u64;
    while args.count.is_none_or(|count| printed < count) {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(|e| CliError::request(&following, &e))?;
        let info = message
            .info()
            .map_err(|e| CliError::request(&following, &*e))?;
        writeln!(
            out,
            "#{} {} at {}",
            info.stream_sequence,
            message.subject,
            render::time(SystemTime::from(info.published))
        )?;
        let headers: Vec<(&str, &str)> = message
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .flat_map(|(name, values)| {
                let name: &str = name.as_ref();
                values.iter().map(move |value| (name, value.as_str()))
            })
            .collect();
        writeln!(
            out,
            "{}",
            render::message(&message.subject, &headers, &message.payload, types)
        )?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}
