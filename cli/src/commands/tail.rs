//! `jetsource tail`: follow a stream through an ordered consumer that starts at new messages.

use std::io::Write;
use std::time::SystemTime;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use jetsource::Codec;

use super::Session;
use crate::args::TailArgs;
use crate::error::CliError;
use crate::protobuf::{Decoded, ProtobufTypes};
use crate::render;
use crate::store::get_stream;
use crate::subject::SubjectFilter;

/// Prints each message stored after the start, until `--count` or an interrupt; Protobuf
/// payloads decoded with `types` when given.
pub async fn run(
    session: &Session,
    args: &TailArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if let Some(subject) = &args.subject {
        // Checked here so a typo gets a precise message rather than the server's.
        SubjectFilter::parse(subject)?;
    }
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
        .map_err(|e| CliError::request(&following, e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| CliError::request(&following, e))?;
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
        let message = message.map_err(|e| CliError::request(&following, e))?;
        let info = message
            .info()
            .map_err(|e| CliError::request(&following, e))?;
        writeln!(
            out,
            "#{} {} at {}",
            info.stream_sequence,
            message.subject,
            render::time(SystemTime::from(info.published))
        )?;
        if let Some(headers) = &message.headers {
            let mut lines: Vec<String> = headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| format!("  {name}: {}", value.as_str()))
                })
                .collect();
            lines.sort();
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
        writeln!(
            out,
            "{}",
            payload(message.headers.as_ref(), &message.payload, types)
        )?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

/// The payload as its `Jetsource-Codec` header says; without one (a message that is not a
/// jetsource event), JSON is recognised by parsing.
fn payload(
    headers: Option<&async_nats::HeaderMap>,
    bytes: &[u8],
    types: Option<&ProtobufTypes>,
) -> String {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    let Some(codec) = header(CODEC) else {
        return render::payload(None, bytes, "  ");
    };
    if Codec::parse(codec) != Some(Codec::Protobuf) {
        return render::labelled_payload(codec, bytes, "  ");
    }
    let decoded = types.map(|types| match header(EVENT_NAME) {
        Some(name) => {
            let version = header(EVENT_VERSION).and_then(|v| v.parse().ok());
            types.decode(name, version, bytes)
        }
        None => Decoded::Note(format!(
            "not decoded: the message has no {EVENT_NAME} header to choose a message type by"
        )),
    });
    render::protobuf_payload(decoded, bytes, "  ")
}

/// The runtime's metadata headers this command reads.
const CODEC: &str = "Jetsource-Codec";
const EVENT_NAME: &str = "Jetsource-Event-Name";
const EVENT_VERSION: &str = "Jetsource-Event-Version";
