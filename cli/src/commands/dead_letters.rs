//! `jetsource dead-letters list|redrive`, through the runtime's [`DeadLetters`].

use std::io::Write;

use jetsource::subscriber::DeadLetters;

use super::Session;
use crate::args::{DeadLetterTarget, ListArgs, RedriveArgs};
use crate::error::CliError;
use crate::protobuf::ProtobufTypes;
use crate::render;
use crate::store::open_existing;
use crate::subject::SubjectFilter;

async fn open(session: &Session, target: &DeadLetterTarget) -> Result<DeadLetters, CliError> {
    let store = open_existing(
        session.client.clone(),
        &target.stream,
        session.request_timeout,
    )
    .await?;
    DeadLetters::open(&store)
        .await
        .map_err(|e| CliError::request("opening the dead-letter stream", &e))
}

/// Lists the subscriber's dead letters, oldest first: a headline each (with the event's name,
/// version and id when the letter has them), then its event (metadata read from its original
/// headers, in wire format 1 or 0) and payload; Protobuf payloads decoded with `types` when
/// given.
pub async fn list(
    session: &Session,
    args: &ListArgs,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let target = &args.target;
    let letters = open(session, target)
        .await?
        .list(&target.durable)
        .await
        .map_err(|e| CliError::request("reading dead letters", &e))?;
    let whose = format!(
        "subscriber {} on stream {}",
        target.durable, target.stream.stream
    );
    match letters.len() {
        0 => writeln!(out, "no dead letters for {whose}")?,
        1 => writeln!(out, "1 dead letter for {whose}")?,
        n => writeln!(out, "{n} dead letters for {whose}")?,
    }
    for letter in letters {
        writeln!(out, "\n{}", render::dead_letter_headline(&letter))?;
        writeln!(out, "  error: {}", letter.error)?;
        // The original headers and the dead letter's own: an event's metadata is read from
        // the former; a message that is no readable event is shown with all of them.
        let headers: Vec<(&str, &str)> = letter
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        writeln!(
            out,
            "{}",
            render::message(&letter.subject, &headers, &letter.payload, types)
        )?;
    }
    Ok(())
}

/// Moves the subscriber's dead letters (those matching the filters) to its redrive subject.
pub async fn redrive(
    session: &Session,
    args: &RedriveArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let subject_filter = args
        .subject_filter
        .as_deref()
        .map(SubjectFilter::parse)
        .transpose()?;
    let dead = open(session, &args.target).await?;
    let durable = &args.target.durable;
    let moved = if args.reason.is_none() && subject_filter.is_none() {
        dead.redrive(durable).await
    } else {
        dead.redrive_matching(durable, |letter| {
            args.reason.is_none_or(|reason| letter.reason == reason)
                && subject_filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(&letter.subject))
        })
        .await
    }
    .map_err(|e| CliError::request("redriving dead letters", &e))?;
    let mut which = Vec::new();
    if let Some(reason) = args.reason {
        which.push(format!("reason {reason}"));
    }
    if let Some(filter) = &args.subject_filter {
        which.push(format!("subject {filter}"));
    }
    let which = if which.is_empty() {
        String::new()
    } else {
        format!(" with {}", which.join(" and "))
    };
    writeln!(
        out,
        "redrove {moved} dead letter{}{which} of subscriber {durable}; it handles them again \
         while it runs",
        if moved == 1 { "" } else { "s" }
    )?;
    Ok(())
}
